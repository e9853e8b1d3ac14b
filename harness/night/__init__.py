"""`harness night`: a batch run inside a time window and under a spending cap, its queue
ordered by priority and `after:`, fired by cron schedules; see README.md."""
