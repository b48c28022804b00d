"""Topics as code: plan, apply and migrate kseg's Kafka topics (`kseg topics`)."""
