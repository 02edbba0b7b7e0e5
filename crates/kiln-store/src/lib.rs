//! SQLite state: the control database and one append-only event log per session.
