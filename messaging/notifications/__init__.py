"""Notifications for members who are away: decided by the worker, traced row by row.

1. A send writes a `NotificationDue` row in its own transaction (`services.send_message`).
2. `decide.decide_due_messages`: once the row is due (`NOTIFY_PUSH_DELAY`), each other
   member's decision is made and traced (`Notification`): suppressed with a reason, or
   pending on each of their devices and on email; pending pushes open the member's
   `PushWindow` of the conversation, pending emails their `EmailDigest`.
3. `sending.claim_due_windows` / `claim_due_digests` (the beat tick) lease what is due;
   `sending.send_push_window` and `sending.send_email_digest` re-check, send, record.

Everything that must happen lives in PostgreSQL, taken with `SKIP LOCKED`; the broker
only carries doorbells, so a broker or worker outage delays notifications, never loses
them, and a worker killed mid-send is made up once its lease (`NOTIFY_LEASE`) expires.
"""
