//! The real SMTP server the tests talk to lives in the library (feature `testkit`), so the
//! benchmark uses the same one.

pub use otpmint::testkit::smtp::*;
