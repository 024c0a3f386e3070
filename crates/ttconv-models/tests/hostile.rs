//! Hostile and broken files are refused with an error, never a panic, a hang or a huge
//! allocation: truncations, an oversized header, header offsets out of bounds, pickles naming
//! code, deep nesting, and (bounded in time) random mutations of every format.

mod common;

use std::io::Write;

use common::data;
use proptest::prelude::*;
use ttconv_models::{Error, Limits, parse_checkpoint};

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap()
}

/// Small limits so a lying size cannot make a test allocate much.
fn limits() -> Limits {
    Limits {
        max_file_bytes: 1 << 24,
        max_tensor_bytes: 1 << 22,
        max_header_bytes: 1 << 20,
        max_tensors: 10_000,
    }
}

const FILES: [&str; 3] = [
    "dense_cnn.safetensors",
    "dense_cnn.pt",
    "dense_cnn_legacy.pt",
];

#[test]
fn every_truncation_is_an_error() {
    for file in FILES {
        let b = bytes(file);
        let cuts: Vec<usize> = (0..200)
            .chain((200..b.len()).step_by(b.len() / 150))
            .collect();
        for cut in cuts {
            assert!(
                parse_checkpoint(&b[..cut], &limits()).is_err(),
                "{file} cut at {cut} parsed"
            );
        }
    }
}

/// A safetensors file from a header text and data bytes.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn safetensors_headers_that_lie_are_refused() {
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert!(matches!(
        parse_checkpoint(&huge, &limits()),
        Err(Error::TooLarge { .. })
    ));
    let mut over = (1u64 << 19).to_le_bytes().to_vec();
    over.extend_from_slice(b"{\"a\":1}");
    assert!(matches!(
        parse_checkpoint(&over, &limits()),
        Err(Error::Truncated { .. })
    ));
    let past_end = safetensors(
        r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
        &[0; 8],
    );
    assert!(parse_checkpoint(&past_end, &limits()).is_err());
    let wrong_size = safetensors(
        r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert!(parse_checkpoint(&wrong_size, &limits()).is_err());
    let unknown = safetensors(
        r#"{"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert!(parse_checkpoint(&unknown, &limits()).is_err());
    let ok = safetensors(
        r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert!(parse_checkpoint(&ok, &limits()).is_ok());
}

/// The first three pickles of a legacy file (magic, protocol, sys info) followed by `object`.
fn legacy_with(object: &[u8]) -> Vec<u8> {
    let real = bytes("dense_cnn_legacy.pt");
    let mut b = real[..137].to_vec(); // the object pickle starts at byte 137
    b.extend_from_slice(object);
    b.extend_from_slice(b"\x80\x02]q\x00.");
    b
}

fn zip_with(pickle: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("archive/data.pkl", options).unwrap();
    w.write_all(pickle).unwrap();
    w.start_file("archive/byteorder", options).unwrap();
    w.write_all(b"little").unwrap();
    w.finish().unwrap().into_inner()
}

#[test]
fn pickles_naming_code_are_refused_by_name() {
    let pickles: [(&[u8], &str); 4] = [
        (b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.", "os.system"),
        (b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x85R.", "builtins.eval"),
        // protocol 4: STACK_GLOBAL from two strings
        (b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x04eval\x93\x8c\x031+1\x85R.", "builtins.eval"),
        (b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00ls\x85R.", "posix.system"),
    ];
    for (p, name) in pickles {
        for (format, file) in [("legacy", legacy_with(p)), ("zip", zip_with(p))] {
            let e = parse_checkpoint(&file, &limits()).unwrap_err();
            assert!(matches!(e, Error::ForbiddenGlobal { .. }), "{format}: {e}");
            assert!(e.to_string().contains(name), "{format}: {e}");
        }
    }
}

#[test]
fn malformed_pickles_are_errors() {
    let deep: Vec<u8> = [b"\x80\x02".as_slice(), &[b']'; 5000], &[b'a'; 4999], b"."].concat();
    let bomb: Vec<u8> = {
        // l = [l, l] repeated: doubles on every step through the memo
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..64 {
            p.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        p.push(b'.');
        p
    };
    let cases: [(&str, Vec<u8>); 6] = [
        ("deep nesting", deep),
        ("memo bomb", bomb),
        ("stack underflow", b"\x80\x02t.".to_vec()),
        ("missing memo", b"\x80\x02h\x07.".to_vec()),
        (
            "string past the end",
            b"\x80\x02X\xff\xff\xff\x7fab.".to_vec(),
        ),
        ("a list, not a state_dict", b"\x80\x02]q\x00.".to_vec()),
    ];
    for (what, p) in cases {
        for file in [legacy_with(&p), zip_with(&p)] {
            assert!(parse_checkpoint(&file, &limits()).is_err(), "{what} parsed");
        }
    }
}

#[test]
fn a_tensor_past_its_storage_is_refused() {
    // conv1.weight of a real state_dict, with its size enlarged so that it runs past the storage.
    let mut b = bytes("dense_cnn_legacy.pt");
    // BININT1 32 of features.0.weight's size (32, 16, 3, 3) -> 33
    let at = b
        .windows(8)
        .position(|w| w == b"K K\x10K\x03K\x03")
        .expect("size tuple");
    b[at + 1] = 33;
    let e = parse_checkpoint(&b, &limits()).unwrap_err();
    assert!(e.to_string().contains("past"), "{e}");
}

fn mutate(mut b: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let n = b.len();
    for &(pos, v) in edits {
        // Half the edits land in the first 4 KiB: headers and pickles live there.
        let p = if pos % 2 == 0 {
            pos % 4096.min(n)
        } else {
            pos % n
        };
        b[p] = v;
    }
    if let Some(c) = cut {
        b.truncate(c % (n + 1));
    }
    b
}

proptest! {
    // 3 x 96 mutated files of ~300 KB: well under a second each in the test profile.
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn mutated_files_never_panic(
        which in 0usize..3,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<usize>()),
    ) {
        let b = mutate(bytes(FILES[which]), &edits, cut);
        let _ = parse_checkpoint(&b, &limits());
    }

    #[test]
    fn random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512), prefix in 0usize..4) {
        let heads: [&[u8]; 4] = [b"", b"\x80\x02\x8a\x0a", b"PK\x03\x04", b"\x10\x00\x00\x00\x00\x00\x00\x00{"];
        let file = [heads[prefix], &b].concat();
        let _ = parse_checkpoint(&file, &limits());
    }
}
