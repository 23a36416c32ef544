//! Compiles the PostgreSQL run of the integration suite (tests/api_postgres) only when
//! `OTPMINT_TEST_POSTGRES_URL` names a server; otherwise that suite says it was skipped.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(otpmint_pg_tests)");
    println!("cargo::rerun-if-env-changed=OTPMINT_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("OTPMINT_TEST_POSTGRES_URL").is_ok_and(|v| !v.trim().is_empty()) {
        println!("cargo::rustc-cfg=otpmint_pg_tests");
    }
}
