//! Who is calling, and which account they may act for.
//!
//! Callers authenticate as Twilio's do, with HTTP Basic credentials:
//! `AccountSid:AuthToken`, or `ApiKeySid:Secret` for an API key, which acts
//! for the account it belongs to. Over gRPC the same value travels as the
//! `authorization` metadata, which is how the HTTP bridge passes it on: the
//! rule lives here once and both transports share it.
//!
//! Without an accounts file the server runs *open*, an emulator convenience
//! (like LocalStack's): any well-formed account SID as the user name is
//! accepted with any password, gRPC calls need no credentials at all, and API
//! keys are unknown.
//!
//! Operators (listed in the accounts file's optional `[[operators]]` table)
//! authenticate with Basic `name:secret` and may act for any account and call
//! the admin RPCs (export); tenants never can.

use std::{collections::HashMap, fmt, path::Path, sync::Arc};

use base64::Engine;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{
    domain::{AccountSid, ValidationError},
    error::{Error, Unauthenticated},
};

/// The `[[accounts]]` / `[[api_keys]]` / `[[operators]]` TOML file given to
/// `--accounts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsFile {
    #[serde(default)]
    accounts: Vec<AccountEntry>,
    #[serde(default)]
    api_keys: Vec<ApiKeyEntry>,
    #[serde(default)]
    operators: Vec<OperatorEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorEntry {
    name: String,
    secret: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountEntry {
    sid: String,
    auth_token: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyEntry {
    sid: String,
    secret: Secret,
    account_sid: String,
}

/// A secret that never prints: `Debug` shows a placeholder, so a stray
/// `{:?}` of a config struct cannot leak it into logs.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
struct Secret(String);

impl Secret {
    /// Constant-time comparison, so response timing does not reveal how much
    /// of a guess was right. (The length may still show; tokens are fixed-size.)
    fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How callers are authenticated. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// No accounts file: see the module docs.
    Open,
    /// Only the credentials in the accounts file are accepted.
    Accounts(Arc<Credentials>),
}

/// The credentials loaded from an accounts file.
#[derive(Debug, Default)]
pub struct Credentials {
    accounts: HashMap<String, Secret>,
    /// API key SID -> (secret, the account the key acts for).
    api_keys: HashMap<String, (Secret, AccountSid)>,
    /// Operator name -> secret.
    operators: HashMap<String, Secret>,
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authenticated (or, in open mode, named) as acting for this account.
    Account(AccountSid),
    /// Open mode without credentials: may act for any account it names,
    /// and call the admin RPCs.
    Anonymous,
    /// An operator from the accounts file: may act for any account it names,
    /// and call the admin RPCs.
    Operator(String),
}

const SK_PREFIX: &str = "SK";

fn is_api_key_sid(value: &str) -> bool {
    value.len() == 34
        && value.starts_with(SK_PREFIX)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl Authenticator {
    /// Loads an accounts file.
    ///
    /// # Errors
    /// A message naming the file and the problem: unreadable, not TOML of the
    /// documented shape, a malformed SID, an empty secret, or a SID listed twice.
    pub fn load(path: &Path) -> anyhow::Result<Authenticator> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read accounts file {}: {e}", path.display()))?;
        Self::parse(&text)
            .map_err(|e| anyhow::anyhow!("invalid accounts file {}: {e}", path.display()))
    }

    /// Parses the text of an accounts file; see [`Authenticator::load`].
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<Authenticator, String> {
        let file: AccountsFile = toml::from_str(text).map_err(|e| redacted_toml_error(text, &e))?;
        let mut credentials = Credentials::default();
        for entry in file.accounts {
            let sid = AccountSid::parse(&entry.sid)
                .map_err(|_| format!("accounts: sid {:?} is not AC + 32 hex digits", entry.sid))?;
            let name = sid.as_str().to_owned();
            let secret = entry.auth_token;
            register(
                &mut credentials.accounts,
                "accounts",
                "auth_token",
                name,
                &secret,
                secret.clone(),
            )?;
        }
        for entry in file.api_keys {
            if !is_api_key_sid(&entry.sid) {
                return Err(format!(
                    "api_keys: sid {:?} is not SK + 32 hex digits",
                    entry.sid
                ));
            }
            let account = AccountSid::parse(&entry.account_sid).map_err(|_| {
                format!(
                    "api_keys: {}: account_sid {:?} is not AC + 32 hex digits",
                    entry.sid, entry.account_sid
                )
            })?;
            let secret = entry.secret;
            let value = (secret.clone(), account);
            register(
                &mut credentials.api_keys,
                "api_keys",
                "secret",
                entry.sid,
                &secret,
                value,
            )?;
        }
        for entry in file.operators {
            let name = entry.name;
            if name.is_empty() || name.contains(':') {
                return Err(format!(
                    "operators: name {name:?} must be non-empty and contain no ':'"
                ));
            }
            if credentials.accounts.contains_key(&name) || credentials.api_keys.contains_key(&name)
            {
                return Err(format!(
                    "operators: {name} is also an account or API key SID"
                ));
            }
            let secret = entry.secret;
            register(
                &mut credentials.operators,
                "operators",
                "secret",
                name,
                &secret,
                secret.clone(),
            )?;
        }
        Ok(Authenticator::Accounts(Arc::new(credentials)))
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Authenticator::Open)
    }

    /// Authenticates the value of an `authorization` header or metadata entry.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] if credentials are required and absent,
    /// malformed, or wrong. The message never includes the secret.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Error> {
        let Some(header) = authorization else {
            return match self {
                Authenticator::Open => Ok(Caller::Anonymous),
                Authenticator::Accounts(_) => Err(Error::Unauthenticated(Unauthenticated::Missing)),
            };
        };
        let (user, password) = parse_basic(header)?;
        match self {
            Authenticator::Open => AccountSid::parse(&user)
                .map(Caller::Account)
                .map_err(|_: ValidationError| Error::Unauthenticated(Unauthenticated::Rejected)),
            Authenticator::Accounts(credentials) => credentials.check(&user, &password),
        }
    }
}

impl Credentials {
    fn check(&self, user: &str, password: &str) -> Result<Caller, Error> {
        let rejected = || Error::Unauthenticated(Unauthenticated::Rejected);
        if let Some(token) = self.accounts.get(user) {
            if token.matches(password) {
                return AccountSid::parse(user)
                    .map(Caller::Account)
                    .map_err(|_| rejected());
            }
        } else if let Some((secret, account)) = self.api_keys.get(user) {
            if secret.matches(password) {
                return Ok(Caller::Account(account.clone()));
            }
        } else if let Some(secret) = self.operators.get(user) {
            if secret.matches(password) {
                return Ok(Caller::Operator(user.to_owned()));
            }
        }
        Err(rejected())
    }
}

/// Adds one entry of the accounts file's `table` to `map`, refusing an empty
/// secret (named `secret_field` in the file) or a name listed twice.
fn register<V>(
    map: &mut HashMap<String, V>,
    table: &str,
    secret_field: &str,
    name: String,
    secret: &Secret,
    value: V,
) -> Result<(), String> {
    if secret.0.is_empty() {
        return Err(format!("{table}: {name} has an empty {secret_field}"));
    }
    if map.contains_key(&name) {
        return Err(format!("{table}: {name} is listed twice"));
    }
    map.insert(name, value);
    Ok(())
}

/// The field names of the accounts file: the only quoted words a parse error
/// may repeat.
const ACCOUNTS_FILE_WORDS: &[&str] = &[
    "accounts",
    "api_keys",
    "operators",
    "sid",
    "auth_token",
    "secret",
    "account_sid",
    "name",
];

/// A TOML error as "line N: message", never the file's text: toml's own
/// `Display` quotes the offending line, and serde's messages quote the
/// offending value (`invalid type: integer `12345``), either of which may be
/// a secret. A quoted word is kept only if it is one of the file's field
/// names, the key of an "unknown field", or a lone punctuation mark.
fn redacted_toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut message = String::new();
    let mut after_unknown_field = false;
    for (i, part) in e.message().split('`').enumerate() {
        let quoted = i % 2 == 1;
        let safe = ACCOUNTS_FILE_WORDS.contains(&part)
            || after_unknown_field
            || (part.len() == 1 && part.bytes().all(|b| b.is_ascii_punctuation()));
        after_unknown_field = !quoted && part.ends_with("unknown field ");
        if quoted && !safe {
            message.push_str("`..`");
        } else if quoted {
            message.push('`');
            message.push_str(part);
            message.push('`');
        } else {
            message.push_str(part);
        }
    }
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", message.trim_end())
        }
        None => message.trim_end().to_owned(),
    }
}

/// Splits `Basic base64(user:password)`.
fn parse_basic(header: &str) -> Result<(String, String), Error> {
    let rejected = || Error::Unauthenticated(Unauthenticated::Rejected);
    let (scheme, encoded) = header.trim().split_once(' ').ok_or_else(rejected)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(rejected());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| rejected())?;
    let decoded = String::from_utf8(decoded).map_err(|_| rejected())?;
    let (user, password) = decoded.split_once(':').ok_or_else(rejected)?;
    Ok((user.to_owned(), password.to_owned()))
}

/// The `authorization` value for Basic credentials (for clients and tests).
pub fn basic_authorization(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Basic credentials given on a command line as `USER:SECRET` (the CLI's and
/// the bench's `--credentials`), checked once when parsed. `Debug` never
/// shows the secret.
#[derive(Clone)]
pub struct BasicCredentials {
    user: String,
    /// The `authorization` value, ready to send.
    authorization: String,
}

impl std::str::FromStr for BasicCredentials {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.split_once(':') {
            Some((user, secret)) => Ok(BasicCredentials {
                user: user.to_owned(),
                authorization: basic_authorization(user, secret),
            }),
            _ => Err("expected USER:SECRET".into()),
        }
    }
}

impl fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BasicCredentials({}:..)", self.user)
    }
}

impl BasicCredentials {
    /// The `Authorization` header value, as the Twilio libraries send it.
    pub fn authorization(&self) -> &str {
        &self.authorization
    }

    /// `message` as a gRPC request, with these credentials (if any) as its
    /// `authorization` metadata.
    pub fn request<T>(credentials: Option<&Self>, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(credentials) = credentials {
            // Always valid metadata: "Basic " and base64 are ASCII.
            let value =
                tonic::metadata::MetadataValue::try_from(credentials.authorization.as_str())
                    .expect("a Basic authorization value is ASCII");
            request.metadata_mut().insert("authorization", value);
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SK: &str = "SKbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn file() -> Authenticator {
        Authenticator::parse(&format!(
            "[[accounts]]\nsid = \"{AC}\"\nauth_token = \"token\"\n\n\
             [[api_keys]]\nsid = \"{SK}\"\nsecret = \"secret\"\naccount_sid = \"{AC}\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn account_token_and_api_key_both_act_for_the_account() {
        let auth = file();
        let account = Caller::Account(AccountSid::parse(AC).unwrap());
        let token = basic_authorization(AC, "token");
        let key = basic_authorization(SK, "secret");
        assert_eq!(auth.authenticate(Some(token.as_str())).unwrap(), account);
        assert_eq!(auth.authenticate(Some(key.as_str())).unwrap(), account);
    }

    #[test]
    fn wrong_missing_or_malformed_credentials_are_rejected() {
        let auth = file();
        for header in [
            basic_authorization(AC, "wrong"),
            basic_authorization(SK, "token"),
            basic_authorization("ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "token"),
            "Bearer abc".to_owned(),
            "Basic !!!".to_owned(),
        ] {
            assert!(
                auth.authenticate(Some(header.as_str())).is_err(),
                "{header}"
            );
        }
        assert!(matches!(
            auth.authenticate(None),
            Err(Error::Unauthenticated(Unauthenticated::Missing))
        ));
    }

    #[test]
    fn open_mode_takes_any_account_sid_and_no_api_key() {
        let auth = Authenticator::Open;
        let any = basic_authorization(AC, "anything");
        let key = basic_authorization(SK, "secret");
        assert!(matches!(
            auth.authenticate(Some(any.as_str())),
            Ok(Caller::Account(_))
        ));
        assert!(auth.authenticate(Some(key.as_str())).is_err());
        assert_eq!(auth.authenticate(None).unwrap(), Caller::Anonymous);
    }

    #[test]
    fn an_operator_is_known_only_with_its_secret() {
        let auth = Authenticator::parse(&format!(
            "[[accounts]]\nsid = \"{AC}\"\nauth_token = \"token\"\n\n\
             [[operators]]\nname = \"backup\"\nsecret = \"s3cret\"\n"
        ))
        .unwrap();
        let operator = basic_authorization("backup", "s3cret");
        let wrong = basic_authorization("backup", "token");
        let caller = auth.authenticate(Some(operator.as_str())).unwrap();
        assert_eq!(caller, Caller::Operator("backup".into()));
        assert!(auth.authenticate(Some(wrong.as_str())).is_err());
        let account = basic_authorization(AC, "token");
        assert!(matches!(
            auth.authenticate(Some(account.as_str())),
            Ok(Caller::Account(_))
        ));
        let clash = Authenticator::parse(&format!(
            "[[accounts]]\nsid = \"{AC}\"\nauth_token = \"t\"\n\n\
             [[operators]]\nname = \"{AC}\"\nsecret = \"s\"\n"
        ));
        assert!(clash.unwrap_err().contains("operators"));
    }

    #[test]
    fn accounts_file_errors_name_the_problem() {
        let bad_sid = Authenticator::parse("[[accounts]]\nsid = \"AC1\"\nauth_token = \"t\"\n");
        assert!(bad_sid.unwrap_err().contains("AC1"));
        let unknown = Authenticator::parse("[[users]]\nname = \"x\"\n").unwrap_err();
        assert!(
            unknown.contains("line 1") && unknown.contains("users"),
            "{unknown}"
        );
        let typo = Authenticator::parse(&format!(
            "[[accounts]]\nsid = \"{AC}\"\nauth_tokn = \"s3cret-typo\"\n"
        ))
        .unwrap_err();
        assert!(
            typo.contains("auth_tokn") && typo.contains("line 3"),
            "{typo}"
        );
        for leaky in [
            format!("[[accounts]]\nsid = \"{AC}\"\nauth_tokn = \"s3cret-typo\"\n"),
            format!("[[accounts]]\nsid = \"{AC}\"\nauth_token = 1234567\n"),
            format!("[[accounts]]\nsid = \"{AC}\"\nauth_token = \"s3cret-open\n"),
        ] {
            let error = Authenticator::parse(&leaky).unwrap_err();
            for secret in ["s3cret", "1234567"] {
                assert!(!error.contains(secret), "{error}");
            }
        }
        let secret_not_printed = format!("{:?}", file());
        assert!(!secret_not_printed.contains("token"));
    }
}
