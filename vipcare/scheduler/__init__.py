"""The embedded scheduler: ``vipcare scheduler`` runs the care day, the dispatcher and the
escalation sweep at their cron times, one process per database (see :mod:`.daemon`)."""
