//! DocRED-format JSON reader.
