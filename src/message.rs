//! The envelope and the typed message catalogue (see `docs/specs/ipc/envelope.md`).
