//! Tests of `frame`.

use super::*;

#[test]
fn gd_start_round_trips_and_matches_mongooseim() {
    let frame = gd_start("dc1.example.com", "0a1b-2c");
    assert_eq!(&frame[..4], &(frame.len() as u32 - 4).to_be_bytes());
    assert_eq!(
        &frame[4..],
        b"<gd_start server='dc1.example.com' conn_id='0a1b-2c'/>"
    );
    assert_eq!(
        parse_gd_start(&frame[4..]).unwrap(),
        ("dc1.example.com".to_string(), "0a1b-2c".to_string())
    );
    let double = br#"<gd_start conn_id="x" server="a&amp;b"/>"#;
    assert_eq!(
        parse_gd_start(double).unwrap(),
        ("a&b".to_string(), "x".to_string())
    );
}

#[test]
fn bad_gd_start_is_malformed() {
    for bad in [
        &b"<gd_stop/>"[..],
        b"garbage",
        b"<gd_start server='a'/>",
        b"\xff\xfe",
    ] {
        assert!(
            matches!(parse_gd_start(bad), Err(FrameError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn data_frames_round_trip() {
    let mut out = Vec::new();
    encode_data(&mut out, 1_700_000_000_000_000, b"alice@a.com", b"\x83term").unwrap();
    let size = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
    assert_eq!(size, out.len() - 4);
    let data = parse_data(&out[4..]).unwrap();
    assert_eq!(
        data,
        Data {
            clock_us: 1_700_000_000_000_000,
            key: b"alice@a.com",
            term: b"\x83term"
        }
    );
    assert!(parse_data(&[0; 9]).is_err());
    let mut lying = vec![0u8; 8];
    lying.extend_from_slice(&100u16.to_be_bytes());
    lying.extend_from_slice(b"short");
    assert!(matches!(parse_data(&lying), Err(FrameError::Malformed(_))));
}

#[tokio::test]
async fn reader_enforces_limits_and_reports_cuts() {
    let mut buf = Vec::new();
    let mut two = Vec::new();
    encode_data(&mut two, 1, b"k", b"one").unwrap();
    encode_data(&mut two, 2, b"k", b"two").unwrap();
    let mut r = &two[..];
    assert_eq!(read_frame(&mut r, 100, &mut buf).await, Ok(Some(())));
    assert_eq!(parse_data(&buf).unwrap().term, b"one");
    assert_eq!(read_frame(&mut r, 100, &mut buf).await, Ok(Some(())));
    assert_eq!(read_frame(&mut r, 100, &mut buf).await, Ok(None));
    let mut big = &two[..];
    assert_eq!(
        read_frame(&mut big, 5, &mut buf).await,
        Err(FrameError::Oversized { size: 14, max: 5 })
    );
    let mut cut = &two[..6];
    assert_eq!(
        read_frame(&mut cut, 100, &mut buf).await,
        Err(FrameError::Truncated)
    );
    let mut cut_header = &two[..2];
    assert_eq!(
        read_frame(&mut cut_header, 100, &mut buf).await,
        Err(FrameError::Truncated)
    );
}

/// A peer announcing a frame just under the limit and sending four bytes
/// of it costs about four bytes, not the size it announced.
#[tokio::test]
async fn announced_size_is_not_allocated_up_front() {
    let max = 16 * 1024 * 1024;
    let mut input = ((max - 1) as u32).to_be_bytes().to_vec();
    input.extend_from_slice(b"abcd");
    let mut buf = Vec::new();
    let got = read_frame(&mut &input[..], max, &mut buf).await;
    assert!(matches!(got, Err(FrameError::Truncated)), "{got:?}");
    assert!(buf.capacity() < 64 * 1024, "{} bytes held", buf.capacity());
}

/// A frame that arrives one byte at a time is read whole.
#[tokio::test]
async fn a_frame_one_byte_at_a_time_is_read_whole() {
    let mut frame = Vec::new();
    encode_data(&mut frame, 42, b"key", &[7; 300]).unwrap();
    let (mut tx, mut rx) = tokio::io::duplex(1);
    let bytes = frame.clone();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for b in bytes {
            tx.write_all(&[b]).await.unwrap();
        }
    });
    let mut buf = Vec::new();
    assert!(matches!(
        read_frame(&mut rx, 1024, &mut buf).await,
        Ok(Some(()))
    ));
    assert_eq!(buf, frame[4..]);
    writer.await.unwrap();
}

/// Hostile peers, as a property test with a fixed seed and a time budget:
/// random and mutated frames never panic the decoders, every gd_start this
/// side writes parses back to what was written, and a random byte stream
/// read in random pieces decodes to what a plain reference decoder finds.
#[tokio::test]
async fn random_and_mutated_frames_never_panic_and_round_trip() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(0x6d6f_6e67_6f6f_7365);
    let budget = std::time::Duration::from_secs(3);
    let start = std::time::Instant::now();
    let alphabet: Vec<char> = "ab.-_'\"&<>;= /\\\u{e9}\u{1f600}0".chars().collect();
    let word = |rng: &mut StdRng, max: usize| -> String {
        let n = rng.random_range(0..max);
        (0..n)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect()
    };
    let mut cases = 0u64;
    while start.elapsed() < budget {
        cases += 1;
        // gd_start written here parses back.
        let (server, conn_id) = (word(&mut rng, 20), word(&mut rng, 10));
        let frame = gd_start(&server, &conn_id);
        match parse_gd_start(&frame[4..]) {
            Ok(parsed) => assert_eq!(parsed, (server.clone(), conn_id.clone())),
            Err(e) => assert!(server.is_empty(), "{server:?} {conn_id:?}: {e}"),
        }
        // Mutated: a byte flipped, cut, or spliced in; never a panic.
        let mut bad = frame[4..].to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..=bad.len());
            match rng.random_range(0..3) {
                0 if at < bad.len() => bad[at] = rng.random(),
                1 => bad.truncate(at),
                _ => bad.insert(at, rng.random()),
            }
        }
        if let Ok((s, _)) = parse_gd_start(&bad) {
            assert!(!s.is_empty());
        }
        // Random bytes as a data frame.
        let n = rng.random_range(0..64);
        let random: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        if let Ok(d) = parse_data(&random) {
            assert_eq!(10 + d.key.len() + d.term.len(), random.len());
        }
        // A stream of frames (some over the limit, the last maybe cut),
        // read in random pieces, against a reference decoder.
        let max = 64;
        let mut stream = Vec::new();
        for _ in 0..rng.random_range(0..5) {
            let size = rng.random_range(0..80u32);
            stream.extend_from_slice(&size.to_be_bytes());
            stream.extend((0..size).map(|_| rng.random::<u8>()));
        }
        stream.truncate(rng.random_range(0..=stream.len()));
        let (mut tx, mut rx) = tokio::io::duplex(rng.random_range(1..16));
        let bytes = stream.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = tx.write_all(&bytes).await;
        });
        let mut expected = reference_frames(&stream, max).into_iter();
        let mut buf = Vec::new();
        loop {
            let got = read_frame(&mut rx, max, &mut buf).await;
            let want = expected.next().expect("a frame or an end");
            match (&got, &want) {
                (Ok(Some(())), Ok(Some(frame))) => assert_eq!(&buf, frame),
                (Ok(None), Ok(None)) => break,
                (Err(FrameError::Truncated), Err("truncated"))
                | (Err(FrameError::Oversized { .. }), Err("oversized")) => break,
                _ => panic!("{stream:?}: got {got:?}, expected {want:?}"),
            }
        }
        drop(rx);
        let _ = writer.await;
    }
    println!("hostile frames: {cases} seeded cases in {budget:?}");
    assert!(cases > 1000, "only {cases} cases in the budget");
    crate::options::record_result(
        "hostile peers: seeded frame decoder and gd_start property test",
        &[("cases", cases.to_string()), ("panics", "0".into())],
    );
}

/// What reading `stream` frame by frame gives: each frame, then the end or
/// the error that stops it.
fn reference_frames(stream: &[u8], max: usize) -> Vec<Result<Option<Vec<u8>>, &'static str>> {
    let mut out = vec![];
    let mut at = 0;
    loop {
        if at == stream.len() {
            out.push(Ok(None));
            return out;
        }
        if stream.len() - at < 4 {
            out.push(Err("truncated"));
            return out;
        }
        let size = u32::from_be_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
        if size > max {
            out.push(Err("oversized"));
            return out;
        }
        if stream.len() - at - 4 < size {
            out.push(Err("truncated"));
            return out;
        }
        out.push(Ok(Some(stream[at + 4..at + 4 + size].to_vec())));
        at += 4 + size;
    }
}
