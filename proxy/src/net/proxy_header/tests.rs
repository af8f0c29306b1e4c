use super::*;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const V1: &[u8] = b"PROXY TCP4 203.0.113.7 10.0.0.5 51234 5439\r\n";
/// An SSLRequest: what a client that skipped the balancer sends first.
const SSL_REQUEST: &[u8] = &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn v2_proxy() -> Vec<u8> {
    encode_v2(
        "203.0.113.7:51234".parse().unwrap(),
        "10.0.0.5:5439".parse().unwrap(),
    )
}

fn proxied(source: &str, destination: &str) -> ProxyHeader {
    ProxyHeader::Proxied {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

#[test]
fn v1_and_v2_headers_name_the_client() {
    let expected = proxied("203.0.113.7:51234", "10.0.0.5:5439");
    for header in [V1.to_vec(), v2_proxy()] {
        let mut bytes = header.clone();
        bytes.extend_from_slice(SSL_REQUEST);
        assert_eq!(
            parse(&bytes),
            Parsed::Complete {
                header: expected,
                len: header.len()
            },
            "the bytes after the header are not the header's"
        );
    }
    let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 5439\r\n";
    assert_eq!(
        parse(v6),
        Parsed::Complete {
            header: proxied("[2001:db8::7]:40000", "[2001:db8::1]:5439"),
            len: v6.len()
        }
    );
}

#[test]
fn local_and_unknown_keep_the_connections_own_addresses() {
    assert_eq!(
        parse(&LOCAL_V2),
        Parsed::Complete {
            header: ProxyHeader::Local,
            len: 16
        }
    );
    assert_eq!(
        parse(b"PROXY UNKNOWN\r\n"),
        Parsed::Complete {
            header: ProxyHeader::Local,
            len: 15
        }
    );
}

#[test]
fn every_prefix_of_a_header_is_incomplete() {
    for header in [V1.to_vec(), v2_proxy(), LOCAL_V2.to_vec()] {
        for n in 0..header.len() {
            assert_eq!(parse(&header[..n]), Parsed::Incomplete, "{n} bytes");
        }
    }
}

#[test]
fn other_first_bytes_are_a_missing_header_and_broken_ones_malformed() {
    for missing in [
        SSL_REQUEST,
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01",
        b"proxy tcp4",
    ] {
        assert_eq!(
            parse(missing),
            Parsed::Invalid(Invalid::Missing),
            "{missing:?}"
        );
    }
    for malformed in [
        &b"PROXY TCP4 203.0.113.999 10.0.0.5 1 2\r\n"[..],
        b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 99999\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",
        b"PROXY TCP4 nonsense here\r\n",
        b"PROXY TCP4 1.2.3.4\r\n",
        // Found by fuzzing: ppp reads an UNKNOWN line up to a bare LF or CR, so the
        // 16-byte prefix of this 17-byte "header" parsed as a complete, different one.
        b"PROXY UNKNOWN \n\r\n",
        b"PROXY UNKNOWN \n\r",
        b"PROXY UNKNOWN x\ry\r\n",
        b"PROXY UNKNOWN\n",
    ] {
        assert!(
            matches!(parse(malformed), Parsed::Invalid(Invalid::Malformed(_))),
            "{:?}: {:?}",
            String::from_utf8_lossy(malformed),
            parse(malformed)
        );
    }
    let mut bad_version = v2_proxy();
    bad_version[12] = 0x11;
    assert!(matches!(
        parse(&bad_version),
        Parsed::Invalid(Invalid::Malformed(_))
    ));
    let mut bad_command = v2_proxy();
    bad_command[12] = 0x2f;
    assert!(matches!(
        parse(&bad_command),
        Parsed::Invalid(Invalid::Malformed(_))
    ));
    let long_v1 = format!("PROXY TCP4 {}", "1".repeat(200));
    assert!(matches!(
        parse(long_v1.as_bytes()),
        Parsed::Invalid(Invalid::Malformed(_))
    ));
}

#[test]
fn garbage_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let seeds = [V1.to_vec(), v2_proxy(), LOCAL_V2.to_vec()];
    for i in 0..20_000 {
        // Mutated headers (a few flipped or truncated bytes) reach deeper than pure noise.
        let mut bytes = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(0..4) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        bytes.truncate(rng.random_range(0..=bytes.len()));
        let _ = parse(&bytes);
        let noise: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
        let _ = parse(&noise);
    }
}

/// A connected pair: the client's end and the server's.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[tokio::test]
async fn a_header_sent_a_byte_at_a_time_is_read_and_nothing_after_it() {
    for header in [V1.to_vec(), v2_proxy()] {
        let (mut client, mut server) = pair().await;
        client.set_nodelay(true).unwrap();
        let sent = header.clone();
        let writer = tokio::spawn(async move {
            for b in sent {
                client.write_all(&[b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            client.write_all(SSL_REQUEST).await.unwrap();
            client
        });
        let got = read_header(&mut server).await.unwrap();
        assert_eq!(got, proxied("203.0.113.7:51234", "10.0.0.5:5439"));
        let _client = writer.await.unwrap();
        let mut next = [0u8; 8];
        server.read_exact(&mut next).await.unwrap();
        assert_eq!(
            next, SSL_REQUEST,
            "the PostgreSQL bytes stay for the negotiation"
        );
    }
}

#[tokio::test]
async fn oversized_closed_and_missing_headers_are_refused() {
    // A v2 header announcing 2000 bytes of TLVs, all of them sent.
    let mut big = v2::PROTOCOL_PREFIX.to_vec();
    big.extend_from_slice(&[0x21, 0x11, 0x07, 0xd0]);
    big.extend(std::iter::repeat_n(0u8, 2000));
    let (mut client, mut server) = pair().await;
    client.write_all(&big).await.unwrap();
    assert!(matches!(
        read_header(&mut server).await,
        Err(HeaderError::Oversized)
    ));

    let (mut client, mut server) = pair().await;
    client.write_all(&V1[..20]).await.unwrap();
    drop(client);
    assert!(matches!(
        read_header(&mut server).await,
        Err(HeaderError::Closed)
    ));

    let (mut client, mut server) = pair().await;
    client.write_all(SSL_REQUEST).await.unwrap();
    let err = read_header(&mut server).await.unwrap_err();
    assert_eq!(err.as_str(), "missing");
}

#[test]
fn mixed_families_are_encoded_as_ipv6() {
    let header = encode_v2(
        "203.0.113.7:51234".parse().unwrap(),
        "[2001:db8::1]:5439".parse().unwrap(),
    );
    assert_eq!(
        parse(&header),
        Parsed::Complete {
            header: proxied("[::ffff:203.0.113.7]:51234", "[2001:db8::1]:5439"),
            len: header.len()
        }
    );
}
