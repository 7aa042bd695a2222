//! MLLP framing rules, driven directly through the Decoder/Encoder traits.

use bytes::{Bytes, BytesMut};
use passerelle_connectors::mllp::codec::{CR, EB, OVERSIZE_HEAD_LEN, SB};
use passerelle_connectors::mllp::{Frame, MllpCodec};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![SB];
    v.extend_from_slice(payload);
    v.extend_from_slice(&[EB, CR]);
    v
}

fn msg(payload: &[u8]) -> Frame {
    Frame::Message(Bytes::copy_from_slice(payload))
}

/// Feeds `chunks` one at a time, decoding everything available after each
/// (as FramedRead does), then signals end of stream. Checks after every
/// decode that the buffer holds at most one frame's worth of bytes.
fn decode_chunks<'a>(
    codec: &mut MllpCodec,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        assert!(
            buf.len() <= codec.max_frame_size() + 1,
            "buffer holds {} bytes, max frame size {}",
            buf.len(),
            codec.max_frame_size()
        );
    }
    while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
        frames.push(frame);
    }
    frames
}

fn decode_all(codec: &mut MllpCodec, bytes: &[u8]) -> Vec<Frame> {
    decode_chunks(codec, [bytes])
}

#[test]
fn two_frames_in_one_read_are_two_items() {
    let mut bytes = framed(b"MSH|one");
    bytes.extend(framed(b"MSH|two"));
    let frames = decode_all(&mut MllpCodec::default(), &bytes);
    assert_eq!(frames, vec![msg(b"MSH|one"), msg(b"MSH|two")]);
}

#[test]
fn frame_in_one_byte_pieces_is_one_item() {
    let bytes = framed(b"MSH|^~\\&|A|B\rPID|1\r");
    let mut codec = MllpCodec::default();
    let frames = decode_chunks(&mut codec, bytes.chunks(1));
    assert_eq!(frames, vec![msg(b"MSH|^~\\&|A|B\rPID|1\r")]);
}

#[test]
fn junk_before_a_frame_is_skipped_and_counted() {
    let mut bytes = b"garbage\r\n".to_vec();
    bytes.extend(framed(b"MSH|ok"));
    bytes.extend_from_slice(&[EB, CR, b'x']); // stray end sequence between frames
    bytes.extend(framed(b"MSH|ok2"));
    let mut codec = MllpCodec::default();
    let frames = decode_all(&mut codec, &bytes);
    assert_eq!(frames, vec![msg(b"MSH|ok"), msg(b"MSH|ok2")]);
    assert_eq!(codec.skipped_bytes(), 9 + 3);
}

#[test]
fn empty_frame_is_an_empty_message() {
    let frames = decode_all(&mut MllpCodec::default(), &framed(b""));
    assert_eq!(frames, vec![msg(b"")]);
}

#[test]
fn end_block_not_followed_by_cr_is_payload() {
    let inside = [b'a', EB, b'b'];
    let at_end = [b'a', b'b', EB]; // on the wire: a b 1C 1C 0D
    let mut bytes = framed(&inside);
    bytes.extend(framed(&at_end));
    let frames = decode_all(&mut MllpCodec::default(), &bytes);
    assert_eq!(frames, vec![msg(&inside), msg(&at_end)]);

    // Same stream, split right after every end block.
    let mut codec = MllpCodec::default();
    let pieces: Vec<&[u8]> = bytes.split_inclusive(|&b| b == EB).collect();
    assert_eq!(
        decode_chunks(&mut codec, pieces),
        vec![msg(&inside), msg(&at_end)]
    );
}

#[test]
fn start_block_inside_a_frame_drops_the_broken_frame_only() {
    let mut bytes = vec![SB];
    bytes.extend_from_slice(b"MSH|cut short");
    bytes.extend(framed(b"MSH|complete"));
    let mut codec = MllpCodec::default();
    assert_eq!(decode_all(&mut codec, &bytes), vec![msg(b"MSH|complete")]);
    assert_eq!(codec.broken_frames(), 1);
}

#[test]
fn oversize_frame_then_good_frame_with_bounded_memory() {
    const MAX: usize = 1024;
    const CHUNK: usize = 700;
    let big: Vec<u8> = (0..100_000u32).map(|i| b'A' + (i % 26) as u8).collect();
    let mut bytes = framed(&big);
    bytes.extend(framed(b"MSH|after"));

    let mut codec = MllpCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in bytes.chunks(CHUNK) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        // What stays buffered between reads never exceeds the maximum plus
        // a possible end block waiting for its CR.
        assert!(buf.len() <= MAX + 1, "buffered {}", buf.len());
    }
    assert_eq!(
        frames,
        vec![
            Frame::Oversize {
                size: big.len(),
                head: Bytes::copy_from_slice(&big[..OVERSIZE_HEAD_LEN]),
            },
            msg(b"MSH|after"),
        ]
    );
}

#[test]
fn oversize_frame_arriving_whole_is_reported() {
    let payload = vec![b'x'; 10];
    let frames = decode_all(&mut MllpCodec::new(9), &framed(&payload));
    assert_eq!(
        frames,
        vec![Frame::Oversize {
            size: 10,
            head: Bytes::from(payload)
        }]
    );
    // Exactly the maximum is accepted.
    assert_eq!(
        decode_all(&mut MllpCodec::new(10), &framed(&[b'y'; 10])),
        vec![msg(&[b'y'; 10])]
    );
}

#[test]
fn end_of_stream_inside_a_frame_is_not_an_error() {
    let mut codec = MllpCodec::default();
    let mut buf = BytesMut::from(&[SB, b'a', b'b'][..]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    assert!(!codec.in_frame());
}

#[test]
fn encoder_wraps_payload() {
    let mut codec = MllpCodec::default();
    let mut out = BytesMut::new();
    codec.encode(&b"MSH|x"[..], &mut out).unwrap();
    codec.encode(Bytes::from_static(b""), &mut out).unwrap();
    let mut expected = framed(b"MSH|x");
    expected.extend(framed(b""));
    assert_eq!(&out[..], &expected[..]);
}

#[test]
fn encoder_refuses_payloads_with_framing_bytes() {
    let mut codec = MllpCodec::default();
    let mut out = BytesMut::new();
    for bad in [&[b'a', SB][..], &[EB, CR][..]] {
        let err = codec.encode(bad, &mut out).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
    assert!(out.is_empty());
    // A lone end block is fine: the decoder reads it back as payload.
    codec.encode(&[EB, b'a'][..], &mut out).unwrap();
}

/// Payload bytes that survive framing: no start block, no end sequence.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..120).prop_map(|mut p| {
        for i in 0..p.len() {
            if p[i] == SB || (p[i] == CR && i > 0 && p[i - 1] == EB) {
                p[i] = b'.';
            }
        }
        p
    })
}

/// Bytes between frames: anything but a start block.
fn junk() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>().prop_filter("not SB", |b| *b != SB), 0..8)
}

fn split(bytes: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut rest = bytes;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).min(rest.len());
        pieces.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    pieces
}

proptest! {
    #[test]
    fn any_split_decodes_to_the_same_frames(
        frames in prop::collection::vec((junk(), payload()), 0..12),
        max in 0usize..100,
        sizes in prop::collection::vec(1usize..40, 1..10),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (junk, payload) in &frames {
            stream.extend_from_slice(junk);
            stream.extend(framed(payload));
            expected.push(if payload.len() > max {
                Frame::Oversize {
                    size: payload.len(),
                    head: Bytes::copy_from_slice(&payload[..payload.len().min(OVERSIZE_HEAD_LEN)]),
                }
            } else {
                msg(payload)
            });
        }
        let pieces = split(&stream, &sizes);
        let got = decode_chunks(&mut MllpCodec::new(max), pieces.iter().map(Vec::as_slice));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        bytes in prop::collection::vec(
            prop_oneof![Just(SB), Just(EB), Just(CR), any::<u8>()], 0..400),
        max in 0usize..50,
        sizes in prop::collection::vec(1usize..40, 1..10),
    ) {
        let pieces = split(&bytes, &sizes);
        // decode_chunks asserts the buffer bound after every decode.
        for frame in decode_chunks(&mut MllpCodec::new(max), pieces.iter().map(Vec::as_slice)) {
            match frame {
                Frame::Message(p) => prop_assert!(p.len() <= max),
                Frame::Oversize { size, head } => {
                    prop_assert!(size > max);
                    prop_assert_eq!(head.len(), size.min(OVERSIZE_HEAD_LEN));
                }
            }
        }
    }
}
