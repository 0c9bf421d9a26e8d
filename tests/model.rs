//! Model-based test of the store: random sequences of Sets (valid, invalid,
//! clearing), Gets, resets (of one or every account and resource) and
//! restarts over every resource of a few accounts,
//! applied both to the real sled store (on a temporary directory) and to a
//! simple in-memory model of the documented semantics (in which every
//! resource of every account is independent), must agree at every step.

use std::collections::HashMap;

use proptest::prelude::*;
use settingsd::{
    contract::SetSettingsMessage,
    domain::{AccountSid, Field},
    parse_patch,
    resource::Resource,
    store::{
        sled::{SledStore, StoreOptions},
        Selector, Store,
    },
    Error,
};

/// A resource of an account: (index into ACCOUNTS, resource).
type Key = (usize, Resource);

const ACCOUNTS: [&str; 3] = [
    "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "AC0123456789abcdef0123456789ABCDEF",
];
const VALID_CR: [&str; 2] = [
    "CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "CR0123456789abcdef0123456789abcdef",
];
const INVALID_CR: [&str; 2] = ["CR123", "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"];
const VALID_URLS: [&str; 2] = ["https://a.s3.amazonaws.com/x/", "https://b.example.com"];
const INVALID_URLS: [&str; 3] = ["http://a.s3.amazonaws.com/", "https://a b/", "s3://bucket"];

#[derive(Debug, Clone)]
enum Op {
    Set(Key, SetSettingsMessage),
    Get(Key),
    /// A reset of these accounts (index) and resources (`None`: all).
    Reset(Option<usize>, Option<Resource>),
    Restart,
}

fn key() -> impl Strategy<Value = Key> {
    (
        0..ACCOUNTS.len(),
        proptest::sample::select(&Resource::ALL[..]),
    )
}

fn sid_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        proptest::sample::select(&VALID_CR[..]).prop_map(|s| Some(s.to_owned())),
        proptest::sample::select(&INVALID_CR[..]).prop_map(|s| Some(s.to_owned())),
    ]
}

fn url_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        proptest::sample::select(&VALID_URLS[..]).prop_map(|s| Some(s.to_owned())),
        proptest::sample::select(&INVALID_URLS[..]).prop_map(|s| Some(s.to_owned())),
    ]
}

fn name_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z ]{1,20}",
        Just("é".repeat(255)),
        Just("n".repeat(256)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let set = (
        key(),
        name_value(),
        sid_value(),
        url_value(),
        proptest::option::of(any::<bool>()),
        sid_value(),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(at, name, creds, url, storage, key, encryption)| {
            Op::Set(
                at,
                SetSettingsMessage {
                    account_sid: ACCOUNTS[at.0].to_owned(),
                    friendly_name: name,
                    aws_credentials_sid: creds,
                    aws_s3_url: url,
                    aws_storage_enabled: storage,
                    encryption_key_sid: key,
                    encryption_enabled: encryption,
                    etag: String::new(),
                },
            )
        });
    let reset = (
        proptest::option::of(0..ACCOUNTS.len()),
        proptest::option::of(proptest::sample::select(&Resource::ALL[..])),
    )
        .prop_map(|(account, resource)| Op::Reset(account, resource));
    prop_oneof![
        6 => set,
        3 => key().prop_map(Op::Get),
        1 => reset,
        1 => Just(Op::Restart),
    ]
}

/// The documented semantics, written out plainly.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    friendly_name: Option<String>,
    aws_credentials_sid: Option<String>,
    aws_s3_url: Option<String>,
    aws_storage_enabled: bool,
    encryption_key_sid: Option<String>,
    encryption_enabled: bool,
}

impl Model {
    /// The merged state, or the first field the documented rules reject.
    fn apply(&self, req: &SetSettingsMessage) -> Result<Model, Field> {
        let name_ok = !req.friendly_name.is_empty() && req.friendly_name.chars().count() <= 255;
        if !name_ok {
            return Err(Field::FriendlyName);
        }
        let sid_ok = |v: &Option<String>| {
            v.as_deref()
                .is_none_or(|s| s.is_empty() || VALID_CR.contains(&s))
        };
        let url_ok = |v: &Option<String>| {
            v.as_deref()
                .is_none_or(|s| s.is_empty() || VALID_URLS.contains(&s))
        };
        if !sid_ok(&req.aws_credentials_sid) {
            return Err(Field::AwsCredentialsSid);
        }
        if !url_ok(&req.aws_s3_url) {
            return Err(Field::AwsS3Url);
        }
        if !sid_ok(&req.encryption_key_sid) {
            return Err(Field::EncryptionKeySid);
        }
        let merge = |old: &Option<String>, new: &Option<String>| match new.as_deref() {
            None => old.clone(),
            Some("") => None,
            Some(v) => Some(v.to_owned()),
        };
        let next = Model {
            friendly_name: Some(req.friendly_name.clone()),
            aws_credentials_sid: merge(&self.aws_credentials_sid, &req.aws_credentials_sid),
            aws_s3_url: merge(&self.aws_s3_url, &req.aws_s3_url),
            aws_storage_enabled: req.aws_storage_enabled.unwrap_or(self.aws_storage_enabled),
            encryption_key_sid: merge(&self.encryption_key_sid, &req.encryption_key_sid),
            encryption_enabled: req.encryption_enabled.unwrap_or(self.encryption_enabled),
        };
        if next.aws_storage_enabled
            && (next.aws_s3_url.is_none() || next.aws_credentials_sid.is_none())
        {
            return Err(Field::AwsStorageEnabled);
        }
        if next.encryption_enabled && next.encryption_key_sid.is_none() {
            return Err(Field::EncryptionEnabled);
        }
        Ok(next)
    }
}

fn observed(
    runtime: &tokio::runtime::Runtime,
    store: &SledStore,
    (account, resource): Key,
) -> Model {
    let account = AccountSid::parse(ACCOUNTS[account]).unwrap();
    let s = runtime
        .block_on(store.get(resource, &account))
        .unwrap()
        .into_twilio()
        .unwrap();
    Model {
        friendly_name: s.friendly_name.map(|v| v.as_str().to_owned()),
        aws_credentials_sid: s.aws_credentials_sid.map(|v| v.as_str().to_owned()),
        aws_s3_url: s.aws_s3_url.map(|v| v.as_str().to_owned()),
        aws_storage_enabled: s.aws_storage_enabled,
        encryption_key_sid: s.encryption_key_sid.map(|v| v.as_str().to_owned()),
        encryption_enabled: s.encryption_enabled,
    }
}

fn check(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::new(dir.path());
    let mut store = SledStore::open(&options).unwrap();
    let mut model: HashMap<Key, Model> = HashMap::new();
    let mut last_revision = 0;

    for op in ops {
        match op {
            Op::Set(key, req) => {
                let before = model.get(&key).cloned().unwrap_or_default();
                let expected = before.apply(&req);
                let sid = AccountSid::parse(ACCOUNTS[key.0]).unwrap();
                let result = match parse_patch(&req) {
                    Err(e) => Err(Error::Invalid(e)),
                    Ok(patch) => runtime.block_on(store.set(key.1, &sid, patch.into(), None)),
                };
                match (expected, result) {
                    (Ok(next), Ok(stored)) => {
                        prop_assert!(stored.revision() > last_revision, "revisions increase");
                        last_revision = stored.revision();
                        model.insert(key, next);
                    }
                    (Err(field), Err(Error::Invalid(e))) => prop_assert_eq!(e.field, field),
                    (expected, result) => {
                        return Err(TestCaseError::fail(format!(
                            "{req:?}: model says {expected:?}, store says {result:?}"
                        )))
                    }
                }
                prop_assert_eq!(
                    observed(&runtime, &store, key),
                    model.get(&key).cloned().unwrap_or_default()
                );
            }
            Op::Get(key) => {
                prop_assert_eq!(
                    observed(&runtime, &store, key),
                    model.get(&key).cloned().unwrap_or_default()
                );
            }
            Op::Reset(account, resource) => {
                let selector = Selector {
                    resource,
                    account: account.map(|a| AccountSid::parse(ACCOUNTS[a]).unwrap()),
                };
                let before = model.len();
                model.retain(|(a, r), _| {
                    !(account.is_none_or(|x| x == *a) && resource.is_none_or(|x| x == *r))
                });
                let (deleted, revision) = runtime.block_on(store.reset(selector)).unwrap();
                prop_assert_eq!(deleted == 0, revision == 0);
                if revision > 0 {
                    prop_assert!(revision > last_revision, "revisions increase");
                    last_revision = revision;
                }
                prop_assert_eq!(deleted, (before - model.len()) as u64);
            }
            Op::Restart => {
                runtime.block_on(store.close()).unwrap();
                drop(store);
                store = SledStore::open(&options).unwrap();
            }
        }
    }
    for account in 0..ACCOUNTS.len() {
        for resource in Resource::ALL {
            prop_assert_eq!(
                observed(&runtime, &store, (account, resource)),
                model.get(&(account, resource)).cloned().unwrap_or_default()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        check(ops)?;
    }
}
