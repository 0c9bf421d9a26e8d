//! The HTTP bridge's input path: form decoding, then validation into a
//! patch, then the merge with its cross-field rules. Nothing may panic, and
//! whatever validation accepts must hold what the API promises. (Every
//! resource's POST takes this one path: one decoder, one validation.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use settingsd::{
    bridge::parse_form,
    domain::{AccountSid, Settings},
    parse_patch,
};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse_form(data) else {
        return;
    };
    let Ok(patch) = parse_patch(&request) else {
        return;
    };
    assert!(!patch.friendly_name.as_str().is_empty());
    assert!(patch.friendly_name.as_str().chars().count() <= 255);
    let account = AccountSid::parse("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
    if let Ok(merged) = Settings::default_for(account).merged(patch) {
        if let Some(url) = &merged.aws_s3_url {
            let parsed = url::Url::parse(url.as_str()).expect("accepted URLs parse");
            assert_eq!(parsed.scheme(), "https");
            assert!(url.as_str().is_ascii());
        }
        if merged.aws_storage_enabled {
            assert!(merged.aws_s3_url.is_some() && merged.aws_credentials_sid.is_some());
        }
        if merged.encryption_enabled {
            assert!(merged.encryption_key_sid.is_some());
        }
    }
});
