"""Set-based engine over many ICU stays: data sources (MIMIC-III/IV, long format, FHIR), synthetic data, timelines."""
