//! `hash-password`: prints a verifier for a `password` listener's
//! `[[listener.users]] password_verifier`, in the method `--method` names:
//! SCRAM-SHA-256 (the default) and md5 in PostgreSQL's `rolpassword` forms, or Redshift's
//! `sha256|<digest>|<salt>`.
//!
//! The password is typed at a terminal with echo off and asked twice, or, with `--stdin`,
//! read from the first line of standard input. It is never an argument (which `ps` and
//! shell history would show) and is wiped from memory after hashing.

use crate::cli::{HashMethodArg, HashPasswordArgs};
use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use zeroize::Zeroizing;

/// Why no password could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadPasswordError {
    #[error("standard input is not a terminal; pass --stdin to read the password from it")]
    NotATerminal,
    #[error("cannot read the password: {0}")]
    Io(#[from] io::Error),
    #[error("cannot turn off terminal echo: {0}")]
    Echo(nix::Error),
    #[error("the password is empty")]
    Empty,
    #[error("the passwords do not match")]
    Mismatch,
}

pub fn run(args: &HashPasswordArgs) -> ExitCode {
    if args.method == HashMethodArg::Md5 && args.user.is_none() {
        eprintln!("error: --method md5 needs --user: an md5 verifier is bound to the user name");
        return ExitCode::FAILURE;
    }
    let password = if args.stdin {
        read_line(&mut io::stdin().lock())
    } else {
        prompt_twice()
    };
    match password {
        Ok(password) => {
            println!("{}", verifier(args, &password));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn verifier(args: &HashPasswordArgs, password: &str) -> String {
    use proxy_auth::password::{md5, redshift_digest, scram};
    match args.method {
        HashMethodArg::ScramSha256 => scram::hash_password(password, args.iterations).to_text(),
        HashMethodArg::Md5 => {
            md5::hash_password(args.user.as_deref().unwrap_or_default(), password).to_text()
        }
        HashMethodArg::Sha256 => redshift_digest::hash_password(password).to_text(),
    }
}

/// The first line of `input`, without its line ending.
fn read_line(input: &mut impl BufRead) -> Result<Zeroizing<String>, ReadPasswordError> {
    let mut line = Zeroizing::new(String::new());
    input.read_line(&mut line)?;
    let len = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(len);
    if line.is_empty() {
        return Err(ReadPasswordError::Empty);
    }
    Ok(line)
}

fn prompt_twice() -> Result<Zeroizing<String>, ReadPasswordError> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return Err(ReadPasswordError::NotATerminal);
    }
    let first = prompt(&stdin, "Password: ")?;
    let second = prompt(&stdin, "Enter it again: ")?;
    if first != second {
        return Err(ReadPasswordError::Mismatch);
    }
    Ok(first)
}

/// Reads one line from the terminal with echo off.
fn prompt(stdin: &io::Stdin, text: &str) -> Result<Zeroizing<String>, ReadPasswordError> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    eprint!("{text}");
    io::stderr().flush()?;
    let saved = tcgetattr(stdin).map_err(ReadPasswordError::Echo)?;
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    // Still show the newline the user types, so the next output starts on a fresh line.
    silent.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(stdin, SetArg::TCSANOW, &silent).map_err(ReadPasswordError::Echo)?;
    let line = read_line(&mut stdin.lock());
    let restored = tcsetattr(stdin, SetArg::TCSANOW, &saved);
    let line = line?;
    restored.map_err(ReadPasswordError::Echo)?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_config::{PasswordMethod, PasswordVerifier};

    fn args(method: HashMethodArg, user: Option<&str>) -> HashPasswordArgs {
        HashPasswordArgs {
            stdin: true,
            iterations: 4096,
            method,
            user: user.map(str::to_owned),
        }
    }

    #[test]
    fn each_method_prints_a_verifier_the_configuration_accepts() {
        for (method, expected) in [
            (HashMethodArg::ScramSha256, PasswordMethod::ScramSha256),
            (HashMethodArg::Md5, PasswordMethod::Md5),
            (HashMethodArg::Sha256, PasswordMethod::RedshiftSha256),
        ] {
            let text = verifier(&args(method, Some("etl")), "pencil");
            let parsed = PasswordVerifier::parse(&text).unwrap();
            assert_eq!(parsed.method(), expected);
            assert!(!text.contains("pencil"));
        }
        assert_eq!(
            verifier(&args(HashMethodArg::Md5, Some("etl")), "pencil"),
            "md5b287cfdd4fdfbce9ca5e821ced1f044c"
        );
    }

    #[test]
    fn reads_the_first_line_without_its_ending() {
        let read = |s: &str| read_line(&mut io::Cursor::new(s.as_bytes().to_vec()));
        assert_eq!(read("s3cret\n").unwrap().as_str(), "s3cret");
        assert_eq!(read("s3cret\r\nrest\n").unwrap().as_str(), "s3cret");
        assert_eq!(read("no newline").unwrap().as_str(), "no newline");
        assert_eq!(read(" spaces kept ").unwrap().as_str(), " spaces kept ");
        assert!(matches!(read("\n"), Err(ReadPasswordError::Empty)));
        assert!(matches!(read(""), Err(ReadPasswordError::Empty)));
    }
}
