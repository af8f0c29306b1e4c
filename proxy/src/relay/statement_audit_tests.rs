use super::*;
use crate::relay::statements::ClientWatch;
use std::sync::{Arc, Mutex};

/// A statement as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Query(StatementText),
    Parse(String, StatementText),
    Execute {
        portal: String,
        statement: Option<String>,
        sha256: Option<[u8; 32]>,
        parameters: Option<u16>,
    },
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Seen>>>);

impl StatementSink for Collect {
    fn statement(&mut self, statement: Statement<'_>) {
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        let seen = match statement {
            Statement::Query { text } => Seen::Query(text.clone()),
            Statement::Parse { name, text } => Seen::Parse(s(name), text.clone()),
            Statement::Execute {
                portal,
                statement,
                sha256,
                parameters,
            } => Seen::Execute {
                portal: s(portal),
                statement: statement.map(s),
                sha256: sha256.copied(),
                parameters,
            },
        };
        self.0.lock().unwrap().push(seen);
    }
}

use crate::net::framing::message as msg;

/// A watch for the statement audit alone, keeping `max` bytes of text, and what it saw.
fn watch(max: usize) -> (ClientWatch, Collect) {
    let seen = Collect::default();
    let tracker = StatementTracker::new(max, Box::new(seen.clone()));
    (ClientWatch::new(false, Some(tracker)), seen)
}

fn sha(text: &[u8]) -> [u8; 32] {
    Sha256::digest(text).into()
}

fn text(kept: &str, whole: &[u8]) -> StatementText {
    StatementText {
        text: kept.to_string(),
        truncated: kept.len() < whole.len(),
        length: whole.len() as u64,
        sha256: sha(whole),
    }
}

/// Parse with `name` and `sql`, no parameter types.
fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(
        b'P',
        &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat(),
    )
}

/// Bind of `portal` to `statement` with text-format `values`.
fn bind(portal: &str, statement: &str, values: &[&[u8]]) -> Vec<u8> {
    let mut body = [portal.as_bytes(), b"\0", statement.as_bytes(), b"\0"].concat();
    body.extend_from_slice(&1u16.to_be_bytes()); // one format code: text
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&(values.len() as u16).to_be_bytes());
    for v in values {
        body.extend_from_slice(&(v.len() as i32).to_be_bytes());
        body.extend_from_slice(v);
    }
    body.extend_from_slice(&0u16.to_be_bytes()); // result formats
    msg(b'B', &body)
}

fn execute(portal: &str) -> Vec<u8> {
    msg(b'E', &[portal.as_bytes(), b"\0\0\0\0\0"].concat())
}

/// What pgbench -M extended and most drivers send: the unnamed statement and portal, and
/// a named statement run twice through a named portal.
fn extended_wire() -> Vec<u8> {
    [
        msg(b'Q', b"select 1\0"),
        parse("", "select $1::int"),
        bind("", "", &[b"424242"]),
        msg(b'D', b"P\0"),
        execute(""),
        msg(b'S', b""),
        parse("s1", "select $1, $2"),
        bind("p1", "s1", &[b"424242", b"secret"]),
        execute("p1"),
        execute("p1"),
        msg(b'C', b"Ss1\0"),
        execute("nobody"),
        msg(b'S', b""),
    ]
    .concat()
}

fn expected_extended() -> Vec<Seen> {
    let s1 = sha(b"select $1, $2");
    let p1 = Seen::Execute {
        portal: "p1".into(),
        statement: Some("s1".into()),
        sha256: Some(s1),
        parameters: Some(2),
    };
    vec![
        Seen::Query(text("select 1", b"select 1")),
        Seen::Parse("".into(), text("select $1::int", b"select $1::int")),
        Seen::Execute {
            portal: "".into(),
            statement: Some("".into()),
            sha256: Some(sha(b"select $1::int")),
            parameters: Some(1),
        },
        Seen::Parse("s1".into(), text("select $1, $2", b"select $1, $2")),
        p1.clone(),
        p1,
        Seen::Execute {
            portal: "nobody".into(),
            statement: None,
            sha256: None,
            parameters: None,
        },
    ]
}

#[test]
fn query_parse_and_execute_are_seen_across_any_split() {
    let wire = extended_wire();
    for split in 0..=wire.len() {
        let (mut w, seen) = watch(4096);
        assert_eq!(w.scan(&wire[..split]), None);
        assert_eq!(w.scan(&wire[split..]), None);
        assert_eq!(
            *seen.0.lock().unwrap(),
            expected_extended(),
            "split {split}"
        );
    }
    // One byte per read.
    let (mut w, seen) = watch(4096);
    for b in &wire {
        w.scan(std::slice::from_ref(b));
    }
    assert_eq!(*seen.0.lock().unwrap(), expected_extended());
}

#[test]
fn bind_values_never_reach_a_record() {
    let (mut w, seen) = watch(4096);
    w.scan(&extended_wire());
    let shown = format!("{:?}", seen.0.lock().unwrap());
    assert!(!shown.contains("424242"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
}

#[test]
fn text_is_cut_on_a_utf8_boundary_and_hashed_whole() {
    // "é" is two bytes: a limit of 4 falls inside the second one.
    let sql = "éé€ select";
    let (mut w, seen) = watch(4);
    w.scan(&msg(b'Q', &[sql.as_bytes(), b"\0"].concat()));
    assert_eq!(
        *seen.0.lock().unwrap(),
        [Seen::Query(text("éé", sql.as_bytes()))]
    );
    let (mut w, seen) = watch(3);
    w.scan(&msg(b'Q', &[sql.as_bytes(), b"\0"].concat()));
    assert_eq!(
        *seen.0.lock().unwrap(),
        [Seen::Query(text("é", sql.as_bytes()))]
    );
    // Invalid UTF-8 is shown replaced; the hash is of the bytes sent.
    let bad = b"select '\xff\xfe'";
    let (mut w, seen) = watch(4096);
    w.scan(&msg(b'Q', &[&bad[..], b"\0"].concat()));
    let seen = seen.0.lock().unwrap();
    let Seen::Query(t) = &seen[0] else { panic!() };
    assert_eq!(t.text, "select '\u{fffd}\u{fffd}'");
    assert!(!t.truncated);
    assert_eq!(t.sha256, sha(bad));
}

#[test]
fn a_huge_query_is_hashed_whole_and_kept_short() {
    let sql: Vec<u8> = b"select '"
        .iter()
        .chain(std::iter::repeat_n(&b'x', 10 << 20))
        .chain(b"'")
        .copied()
        .collect();
    let wire = msg(b'Q', &[&sql[..], b"\0"].concat());
    let (mut w, seen) = watch(100);
    for chunk in wire.chunks(64 * 1024) {
        w.scan(chunk);
    }
    let seen = seen.0.lock().unwrap();
    let Seen::Query(t) = &seen[0] else { panic!() };
    assert_eq!(t.text.as_bytes(), &sql[..100]);
    assert!(t.truncated);
    assert_eq!(t.length, sql.len() as u64);
    assert_eq!(t.sha256, sha(&sql));
}

#[test]
fn statement_names_are_bounded_and_messages_cut_short_are_survived() {
    let long = "n".repeat(200);
    let (mut w, seen) = watch(4096);
    // A Parse whose body ends inside the text, then one with no text at all.
    w.scan(&msg(b'P', b"s\0select"));
    w.scan(&msg(b'P', b"s"));
    w.scan(&msg(b'B', b"p\0"));
    w.scan(&execute("p"));
    w.scan(&parse(&long, "select 1"));
    let seen = seen.0.lock().unwrap();
    assert_eq!(seen[0], Seen::Parse("s".into(), text("select", b"select")));
    assert!(
        matches!(
            &seen[1],
            Seen::Execute {
                statement: None,
                ..
            }
        ),
        "{seen:?}"
    );
    assert!(matches!(&seen[2], Seen::Parse(name, _) if name.len() == MAX_NAME));
}

#[test]
fn audit_only_never_withholds_a_terminate() {
    let (mut w, _) = watch(4096);
    assert_eq!(w.scan(&[b'X', 0, 0, 0, 4]), None);
}

/// A second Parse of a name that exists is refused by the server (42P05), so the name
/// still runs its first text: an Execute names that text's hash, not the refused one's.
/// Both texts have their Parse record.
#[test]
fn a_redefined_named_statement_keeps_its_first_text_until_closed() {
    let close = |name: &str| msg(b'C', &[b"S", name.as_bytes(), b"\0"].concat());
    let wire = [
        parse("s1", "select 'first'"),
        parse("s1", "select 'second'"),
        bind("", "s1", &[]),
        execute(""),
        close("s1"),
        parse("s1", "select 'third'"),
        bind("", "s1", &[]),
        execute(""),
    ]
    .concat();
    let (mut w, seen) = watch(4096);
    w.scan(&wire);
    let hashes: Vec<_> = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Seen::Execute { sha256, .. } => Some(*sha256),
            _ => None,
        })
        .collect();
    assert_eq!(
        hashes,
        [Some(sha(b"select 'first'")), Some(sha(b"select 'third'"))]
    );
    let parses = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| matches!(s, Seen::Parse(..)))
        .count();
    assert_eq!(parses, 3);
}
