//! Framing: the connection preface and the 8-byte frame header (see `docs/specs/ipc/framing.md`).
