"""immunoguide: biomarker-guided (precision) immunotherapy in sepsis.

From raw ICU data to SOFA (1996 and SOFA-2) and Sepsis-3 onset, immune endotype (MALS / immunoparalysis),
eligibility with evidence, concealed randomisation, follow-up, the statistical analysis plan and the next trial.

Key references: Singer M et al. JAMA 2016;315:801-810 (doi:10.1001/jama.2016.0287, Sepsis-3);
Vincent JL et al. Intensive Care Med 1996;22:707-710 (doi:10.1007/BF01709751, SOFA);
Ranzani OT et al. JAMA 2025 (doi:10.1001/jama.2025.20516, SOFA-2);
Giamarellos-Bourboulis EJ et al. JAMA 2025 (doi:10.1001/jama.2025.24175, ImmunoSep).
"""

__version__ = "0.1.0"
