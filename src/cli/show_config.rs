//! `facepass config`: check the configuration and print it with secrets redacted.

use crate::config::Config;

pub fn run() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    // Secrets print as [REDACTED] (secrecy's Debug).
    println!("{config:#?}");
    Ok(())
}
