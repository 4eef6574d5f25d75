use super::*;
use proptest::prelude::*;

/// Feeds `input` in pieces of `step` bytes; returns bytes used and the payload.
fn feed_all(input: &[u8], step: usize) -> Result<(usize, Vec<u8>), ChunkError> {
    let mut c = Chunked::default();
    let mut used = 0;
    let mut payload = Vec::new();
    while used < input.len() && !c.is_done() {
        let end = (used + step).min(input.len());
        let piece = &input[used..end];
        let n = c.feed(piece, |r| payload.extend_from_slice(&piece[r]))?;
        used += n;
        if n < piece.len() {
            break;
        }
    }
    assert!(c.is_done(), "body not finished");
    Ok((used, payload))
}

fn encode(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks.iter().filter(|c| !c.is_empty()) {
        out.extend_from_slice(format!("{:X}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A chunked body with extensions and a trailer is followed to its end, in one
/// piece or byte by byte; the bytes after it (the next message) are not taken.
#[test]
fn chunked_with_extensions_and_trailer() {
    let body = b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let mut input = body.to_vec();
    input.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    for step in [1, 3, input.len()] {
        let (used, payload) = feed_all(&input, step).unwrap();
        assert_eq!(used, body.len(), "step {step}");
        assert_eq!(payload, b"hello world");
    }
}

/// Broken framing is an error: no size, a bad size, a missing CRLF after data,
/// a size over 64 bits.
#[test]
fn chunked_errors() {
    let err = |b: &[u8]| Chunked::default().feed(b, |_| {}).unwrap_err();
    assert_eq!(err(b"\r\n"), ChunkError::Size);
    assert_eq!(err(b"5x\r\n"), ChunkError::Size);
    assert_eq!(err(b"1\r\nab\r\n"), ChunkError::LineEnd);
    assert_eq!(err(b"1\n"), ChunkError::Size);
    assert_eq!(err(b"11111111111111111\r\n"), ChunkError::SizeOverflow);
    assert_eq!(err(b"0\r\n\n"), ChunkError::LineEnd);
}

/// Length bodies take exactly their length; until-close bodies end at EOF only;
/// a length body cut short is truncated.
#[test]
fn body_framings() {
    let mut b = Body::new(Framing::Length(4));
    assert_eq!(b.advance(b"ab", |_| {}), Ok(2));
    assert_eq!(b.advance(b"cdef", |_| {}), Ok(2));
    assert!(b.is_done());
    assert!(Body::new(Framing::Empty).is_done());
    assert!(Body::new(Framing::Length(0)).is_done());
    let mut b = Body::new(Framing::UntilClose);
    assert_eq!(b.advance(b"abc", |_| {}), Ok(3));
    assert!(!b.is_done());
    assert!(b.at_eof().is_ok());
    assert!(b.is_done());
    let mut b = Body::new(Framing::Length(4));
    assert!(matches!(b.at_eof(), Err(RelayError::Truncated)));
}

/// Buffered body bytes move to the output verbatim, or as payload only.
#[test]
fn buffered_bytes() {
    let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nNEXT"[..]);
    let mut out = Vec::new();
    let mut b = Body::new(Framing::Chunked);
    take_buffered(&mut b, &mut buf, &mut out, true).unwrap();
    assert_eq!((out.as_slice(), &buf[..]), (&b"abc"[..], &b"NEXT"[..]));
    assert!(b.is_done());
    let mut buf = BytesMut::from(&b"3\r\nab"[..]);
    let mut out = b"HEAD".to_vec();
    let mut b = Body::new(Framing::Chunked);
    take_buffered(&mut b, &mut buf, &mut out, false).unwrap();
    assert_eq!(out, b"HEAD3\r\nab");
    assert!(buf.is_empty() && !b.is_done());
}

/// `copy` relays a chunked body verbatim (framing kept) and stops at its end,
/// leaving what follows in the buffer; de-chunked, only the payload arrives.
#[tokio::test]
async fn copy_chunked() {
    for dechunk in [false, true] {
        let (mut tx, mut src) = tokio::io::duplex(64);
        let (mut dst, mut rx) = tokio::io::duplex(1024);
        let wire = b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\nNEXT";
        tokio::spawn(async move {
            for piece in wire.chunks(7) {
                tx.write_all(piece).await.unwrap();
            }
        });
        let mut body = Body::new(Framing::Chunked);
        let mut buf = BytesMut::new();
        let mut scratch = Vec::new();
        copy(
            &mut body,
            &mut src,
            &mut buf,
            &mut dst,
            dechunk,
            &mut scratch,
        )
        .await
        .unwrap();
        drop(dst);
        let mut got = Vec::new();
        rx.read_to_end(&mut got).await.unwrap();
        let want: &[u8] = if dechunk {
            b"wikipedia"
        } else {
            b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n"
        };
        assert_eq!(got, want);
        // What came after the body is left for the next message (possibly
        // still on its way).
        let mut rest = buf.to_vec();
        let mut more = Vec::new();
        src.read_to_end(&mut more).await.unwrap();
        rest.extend_from_slice(&more);
        assert_eq!(rest, b"NEXT");
    }
}

/// A length body whose sender closes early fails as truncated.
#[tokio::test]
async fn copy_truncated() {
    let (mut tx, mut src) = tokio::io::duplex(64);
    tx.write_all(b"abc").await.unwrap();
    drop(tx);
    let mut body = Body::new(Framing::Length(10));
    let mut sink = tokio::io::sink();
    let r = copy(
        &mut body,
        &mut src,
        &mut BytesMut::new(),
        &mut sink,
        false,
        &mut Vec::new(),
    )
    .await;
    assert!(matches!(r, Err(RelayError::Truncated)), "{r:?}");
}

proptest! {
    /// Any payload in any chunks, fed in any piece size: the whole encoding is
    /// used and the payload comes out unchanged.
    #[test]
    fn chunked_roundtrip(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
        step in 1usize..50,
    ) {
        let wire = encode(&chunks);
        let (used, payload) = feed_all(&wire, step).unwrap();
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(payload, chunks.concat());
    }
}
