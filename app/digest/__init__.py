"""The daily Kochava campaign digest: Reporting API client, spend rows, CPI/ROAS traits, schedule."""
