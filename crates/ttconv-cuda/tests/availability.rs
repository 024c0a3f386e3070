//! The backend starts or says why not, and never panics: this runs (and checks something) on
//! every machine, with or without CUDA.

use ttconv::Backend;
use ttconv_cuda::{CudaBackend, Error, device_count, driver_available};

#[test]
fn new_returns_a_backend_or_a_typed_error_without_panicking() {
    match CudaBackend::new() {
        Ok(b) => {
            assert_eq!(b.name(), "cuda:0");
            println!("CUDA backend on {} ({})", b.device_name(), b.arch());
        }
        Err(ttconv::Error::Backend { backend, message }) => {
            assert_eq!(backend, "cuda:0");
            assert!(!message.is_empty());
            println!("skipped: {message}");
        }
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
}

#[test]
fn a_missing_device_ordinal_is_an_unavailable_error() {
    let ordinal = 1 << 20;
    match CudaBackend::open(ordinal) {
        Ok(_) => panic!("device {ordinal} cannot exist"),
        Err(e) => {
            assert!(e.is_unavailable(), "{e}");
            if driver_available() && device_count().is_ok() {
                assert!(
                    matches!(e, Error::NoDevice { ordinal: o, .. } if o == ordinal),
                    "{e}"
                );
            }
        }
    }
    assert!(CudaBackend::with_device(ordinal).is_err());
}

#[test]
fn device_count_never_panics() {
    match device_count() {
        Ok(n) => println!("{n} CUDA device(s)"),
        Err(e) => {
            assert!(e.is_unavailable(), "{e}");
            println!("skipped: {e}");
        }
    }
}
