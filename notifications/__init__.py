"""Channel adapters (mock SMS/voice, Twilio), the outbox, contact policy, dispatcher, webhooks.

Importing this package is cheap: backends and the web app are imported where used.
"""
