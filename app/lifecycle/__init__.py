"""Lifecycle signals a marketer can act on (pure rules): acquisition channel, lifecycle stage, win-back and
ad suppression, LTV in one reporting currency. The worker calls these with the device's state; nothing here
touches Kafka or faust."""
