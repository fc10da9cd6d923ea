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
