//! `Cipher::decrypt` on arbitrary strings with a fixed key: never a panic. And the
//! round trip: whatever UTF-8 `encrypt_with` seals, `decrypt` opens to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxrules::crypto::Cipher;

/// The official samples' EncodingAESKey and the Python sample's AppID.
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";

fuzz_target!(|data: &[u8]| {
    let Ok(cipher) = Cipher::new(KEY, APP_ID) else {
        panic!("the fixed key is valid");
    };
    let text = String::from_utf8_lossy(data);
    let _ = cipher.decrypt(&text);

    if std::str::from_utf8(data).is_ok() {
        let mut random = [0u8; 16];
        for (r, b) in random.iter_mut().zip(data) {
            *r = *b;
        }
        let sealed = cipher.encrypt_with(data, random);
        assert_eq!(cipher.decrypt(&sealed).as_deref(), Ok(data));
    }
});
