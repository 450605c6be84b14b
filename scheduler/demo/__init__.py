"""``mailq-scheduler demo``: a scheduler with a realistic queue and a loopback SMTP sink."""
