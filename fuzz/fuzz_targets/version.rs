//! Debian versions: parsing never panics and the order is a total order.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut parts = text.splitn(3, '\n');
        let a = parts
            .next()
            .and_then(|t| kiln::debian::version::Version::parse(t).ok());
        let b = parts
            .next()
            .and_then(|t| kiln::debian::version::Version::parse(t).ok());
        let c = parts
            .next()
            .and_then(|t| kiln::debian::version::Version::parse(t).ok());
        if let (Some(a), Some(b)) = (&a, &b) {
            assert_eq!(a.cmp(b), b.cmp(a).reverse());
            if let Some(c) = &c {
                if a <= b && b <= c {
                    assert!(a <= c);
                }
            }
            let shown = kiln::debian::version::Version::parse(&a.to_string()).expect("display reparses");
            assert_eq!(&shown, a);
        }
    }
});
