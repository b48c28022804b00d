"""The warehouse leg: warehouse rows and spend from Kafka into PostgreSQL, and ROAS reports from it."""
