//! The Recording Settings domain: validated identifiers, the stored record and
//! the patch a Set applies to it. Nothing here knows about gRPC, HTTP or sled;
//! every transport converts its input into these types once, at its edge, and
//! everything past the edge can rely on them being valid.

use std::{fmt, time::SystemTime};

/// A field of the Recording Settings resource, named for error reporting.
///
/// Each edge renders it in its own vocabulary: gRPC uses [`Field::as_str`]
/// (the proto field name), the HTTP bridge uses Twilio's PascalCase parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    AccountSid,
    FriendlyName,
    AwsCredentialsSid,
    AwsS3Url,
    AwsStorageEnabled,
    EncryptionKeySid,
    EncryptionEnabled,
}

impl Field {
    /// Every field, in the order the proto declares them.
    pub const ALL: [Field; 7] = [
        Field::AccountSid,
        Field::FriendlyName,
        Field::AwsCredentialsSid,
        Field::AwsS3Url,
        Field::AwsStorageEnabled,
        Field::EncryptionKeySid,
        Field::EncryptionEnabled,
    ];

    /// The snake_case name used by the proto contract and the REST JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::AccountSid => "account_sid",
            Field::FriendlyName => "friendly_name",
            Field::AwsCredentialsSid => "aws_credentials_sid",
            Field::AwsS3Url => "aws_s3_url",
            Field::AwsStorageEnabled => "aws_storage_enabled",
            Field::EncryptionKeySid => "encryption_key_sid",
            Field::EncryptionEnabled => "encryption_enabled",
        }
    }

    /// The inverse of [`Field::as_str`].
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a value was rejected. Kept structured (rather than a finished sentence)
/// so that each transport can name fields in its own vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A required field was absent or empty.
    Missing,
    /// The value is longer than allowed.
    TooLong { max_chars: usize },
    /// The value does not have the expected shape; the text says what was expected.
    Malformed(String),
    /// The value is `true` but a field it depends on is unset.
    Requires(Field),
}

/// A rejected input: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {}", self.describe(|f| f.as_str()))]
pub struct ValidationError {
    pub field: Field,
    pub violation: Violation,
}

impl ValidationError {
    fn new(field: Field, violation: Violation) -> Self {
        ValidationError { field, violation }
    }

    fn malformed(field: Field, expected: impl Into<String>) -> Self {
        ValidationError::new(field, Violation::Malformed(expected.into()))
    }

    /// Describes the violation (without the offending field's own name),
    /// naming any other field with `name`.
    pub fn describe(&self, name: impl Fn(Field) -> &'static str) -> String {
        match &self.violation {
            Violation::Missing => "is required".to_owned(),
            Violation::TooLong { max_chars } => {
                format!("must be at most {max_chars} characters")
            }
            Violation::Malformed(expected) => expected.clone(),
            Violation::Requires(other) => format!("cannot be true while {} is unset", name(*other)),
        }
    }
}

/// Checks `value` is `prefix` followed by exactly 32 hexadecimal digits, the
/// shape of every Twilio SID.
fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == prefix.len() + 32
        && value.starts_with(prefix)
        && value[prefix.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A Twilio account SID: `AC` followed by 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountSid(String);

impl AccountSid {
    /// # Errors
    /// A [`ValidationError`] on `account_sid` if `value` is not `AC` + 32 hex digits.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if is_sid(value, "AC") {
            Ok(AccountSid(value.to_owned()))
        } else {
            Err(ValidationError::malformed(
                Field::AccountSid,
                "must be AC followed by 32 hexadecimal digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Twilio Credentials API SID (an AWS credential or a public key):
/// `CR` followed by 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialSid(String);

impl CredentialSid {
    /// # Errors
    /// A [`ValidationError`] on `field` if `value` is not `CR` + 32 hex digits.
    pub fn parse(field: Field, value: &str) -> Result<Self, ValidationError> {
        if is_sid(value, "CR") {
            Ok(CredentialSid(value.to_owned()))
        } else {
            Err(ValidationError::malformed(
                field,
                "must be CR followed by 32 hexadecimal digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A settings' descriptive name: 1 to 255 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendlyName(String);

impl FriendlyName {
    pub const MAX_CHARS: usize = 255;

    /// # Errors
    /// A [`ValidationError`] on `friendly_name` if `value` is empty or too long.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() {
            return Err(ValidationError::new(
                Field::FriendlyName,
                Violation::Missing,
            ));
        }
        if value.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                Field::FriendlyName,
                Violation::TooLong {
                    max_chars: Self::MAX_CHARS,
                },
            ));
        }
        Ok(FriendlyName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where recordings go in S3: an absolute `https` URL with a host.
///
/// Stored exactly as given (after validation), because users expect to read
/// back what they wrote, not the URL parser's normalisation of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url(String);

impl S3Url {
    /// Long enough for any real bucket URL, short enough to bound a record.
    pub const MAX_CHARS: usize = 2048;

    /// # Errors
    /// A [`ValidationError`] on `aws_s3_url` if `value` is too long, contains
    /// characters RFC 3986 does not allow, or is not an absolute `https` URL
    /// with a host.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let field = Field::AwsS3Url;
        if value.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                field,
                Violation::TooLong {
                    max_chars: Self::MAX_CHARS,
                },
            ));
        }
        // The URL parser is lenient (it percent-encodes spaces and accepts
        // non-ASCII), so first hold the raw text to RFC 3986's character set.
        if let Some(bad) = value.chars().find(|c| !is_rfc3986_char(*c)) {
            return Err(ValidationError::malformed(
                field,
                format!("contains {bad:?}, which is not allowed in a URL (RFC 3986)"),
            ));
        }
        if !has_valid_percent_escapes(value) {
            return Err(ValidationError::malformed(
                field,
                "contains a '%' that is not followed by two hexadecimal digits",
            ));
        }
        let parsed = url::Url::parse(value).map_err(|e| {
            ValidationError::malformed(field, format!("must be an absolute https URL ({e})"))
        })?;
        if parsed.scheme() != "https" {
            return Err(ValidationError::malformed(
                field,
                format!("must use the https scheme, not {:?}", parsed.scheme()),
            ));
        }
        // The WHATWG parser invents a host for "https:///path" and
        // "https:host"; RFC 3986 says those have no authority. Check the text.
        if parsed.host_str().is_none_or(str::is_empty) || raw_host(value).is_empty() {
            return Err(ValidationError::malformed(field, "must have a host"));
        }
        Ok(S3Url(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The host of an `https://` URL as written: the authority (between `//` and
/// the first `/`, `?` or `#`) without user information or port. Empty when
/// the text has no `//` authority at all.
fn raw_host(value: &str) -> &str {
    let Some(after_scheme) = value
        .get(6..)
        .filter(|_| value[..6].eq_ignore_ascii_case("https:"))
    else {
        return "";
    };
    let Some(rest) = after_scheme.strip_prefix("//") else {
        return "";
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.starts_with('[') {
        return host_port;
    }
    host_port.split(':').next().unwrap_or("")
}

/// RFC 3986 section 2: unreserved, reserved (gen-delims and sub-delims), and
/// `%` for percent-encoding.
fn is_rfc3986_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

fn has_valid_percent_escapes(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// What a Set does to one optional field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Update<T> {
    /// The field was not sent: keep the stored value.
    #[default]
    Keep,
    /// The field was sent empty: clear the stored value.
    Clear,
    /// Store this value.
    Set(T),
}

impl<T> Update<T> {
    /// Interprets an optional wire string: absent keeps, `""` clears, anything
    /// else is parsed.
    ///
    /// # Errors
    /// Whatever `parse` returns for a non-empty value.
    pub fn from_wire(
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, ValidationError>,
    ) -> Result<Self, ValidationError> {
        match value {
            None => Ok(Update::Keep),
            Some("") => Ok(Update::Clear),
            Some(v) => parse(v).map(Update::Set),
        }
    }

    fn apply(self, current: &mut Option<T>) {
        match self {
            Update::Keep => {}
            Update::Clear => *current = None,
            Update::Set(v) => *current = Some(v),
        }
    }
}

/// A validated Set: the changes to merge into an account's stored settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSettingsPatch {
    pub friendly_name: FriendlyName,
    pub aws_credentials_sid: Update<CredentialSid>,
    pub aws_s3_url: Update<S3Url>,
    pub aws_storage_enabled: Option<bool>,
    pub encryption_key_sid: Update<CredentialSid>,
    pub encryption_enabled: Option<bool>,
}

impl RecordingSettingsPatch {
    /// A patch that only sets the (required) friendly name.
    pub fn new(friendly_name: FriendlyName) -> Self {
        RecordingSettingsPatch {
            friendly_name,
            aws_credentials_sid: Update::Keep,
            aws_s3_url: Update::Keep,
            aws_storage_enabled: None,
            encryption_key_sid: Update::Keep,
            encryption_enabled: None,
        }
    }
}

/// An account's Recording Settings as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSettings {
    pub account_sid: AccountSid,
    pub friendly_name: Option<FriendlyName>,
    pub aws_credentials_sid: Option<CredentialSid>,
    pub aws_s3_url: Option<S3Url>,
    pub aws_storage_enabled: bool,
    pub encryption_key_sid: Option<CredentialSid>,
    pub encryption_enabled: bool,
    /// The store-wide revision of the write that produced this state; 0 for
    /// the default resource.
    pub revision: u64,
    /// When that write happened; `None` for the default resource.
    pub update_time: Option<SystemTime>,
}

impl RecordingSettings {
    /// The resource of an account that never set anything. Twilio's resource
    /// always exists, so reads of such an account answer this, not "not found".
    pub fn default_for(account_sid: AccountSid) -> Self {
        RecordingSettings {
            account_sid,
            friendly_name: None,
            aws_credentials_sid: None,
            aws_s3_url: None,
            aws_storage_enabled: false,
            encryption_key_sid: None,
            encryption_enabled: false,
            revision: 0,
            update_time: None,
        }
    }

    /// Merges `patch` into these settings and checks the rules that span
    /// fields. The result keeps this record's revision and time: the store
    /// stamps them when it writes.
    ///
    /// # Errors
    /// A [`ValidationError`] if a flag is enabled without what it needs.
    pub fn merged(&self, patch: RecordingSettingsPatch) -> Result<Self, ValidationError> {
        let mut next = self.clone();
        next.friendly_name = Some(patch.friendly_name);
        patch
            .aws_credentials_sid
            .apply(&mut next.aws_credentials_sid);
        patch.aws_s3_url.apply(&mut next.aws_s3_url);
        patch.encryption_key_sid.apply(&mut next.encryption_key_sid);
        if let Some(enabled) = patch.aws_storage_enabled {
            next.aws_storage_enabled = enabled;
        }
        if let Some(enabled) = patch.encryption_enabled {
            next.encryption_enabled = enabled;
        }
        next.check_dependencies()?;
        Ok(next)
    }

    /// The cross-field rules a stored resource always satisfies: storage in
    /// S3 needs a URL and a credential, encryption needs a key.
    ///
    /// # Errors
    /// The first rule broken, naming the flag and what it needs.
    pub fn check_dependencies(&self) -> Result<(), ValidationError> {
        let requires = |field, other| Err(ValidationError::new(field, Violation::Requires(other)));
        if self.aws_storage_enabled {
            if self.aws_s3_url.is_none() {
                return requires(Field::AwsStorageEnabled, Field::AwsS3Url);
            }
            if self.aws_credentials_sid.is_none() {
                return requires(Field::AwsStorageEnabled, Field::AwsCredentialsSid);
            }
        }
        if self.encryption_enabled && self.encryption_key_sid.is_none() {
            return requires(Field::EncryptionEnabled, Field::EncryptionKeySid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CR: &str = "CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn account_sid_needs_ac_and_32_hex_digits() {
        assert!(AccountSid::parse("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_ok());
        assert!(AccountSid::parse("AC0123456789ABCDEFabcdef0123456789").is_ok());
        for bad in [
            "",
            "AC",
            "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "ACgaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "acaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaé",
        ] {
            let err = AccountSid::parse(bad).unwrap_err();
            assert_eq!(err.field, Field::AccountSid, "{bad:?}");
        }
    }

    #[test]
    fn s3_url_must_be_absolute_https_with_rfc3986_characters() {
        assert!(S3Url::parse("https://b.s3.amazonaws.com/p/").is_ok());
        assert!(S3Url::parse("https://b.s3.amazonaws.com/a%20b?x=1#f").is_ok());
        for bad in [
            "http://b.s3.amazonaws.com/",
            "b.s3.amazonaws.com/p",
            "/relative/path",
            "https://",
            "https:///path",
            "https:host/path",
            "https://:443/path",
            "https://user@/path",
            "https://b.s3.amazonaws.com/a b",
            "https://b.s3.amazonaws.com/é",
            "https://b.s3.amazonaws.com/%zz",
            "https://b.s3.amazonaws.com/%2",
            "s3://bucket/path",
        ] {
            let err = S3Url::parse(bad).unwrap_err();
            assert_eq!(err.field, Field::AwsS3Url, "{bad:?}");
        }
    }

    #[test]
    fn friendly_name_is_required_and_bounded_in_characters() {
        assert_eq!(
            FriendlyName::parse("").unwrap_err().violation,
            Violation::Missing
        );
        assert!(FriendlyName::parse(&"é".repeat(255)).is_ok());
        assert!(FriendlyName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn merge_keeps_unsent_fields_and_clears_empty_ones() {
        let account = AccountSid::parse("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        let cr = CredentialSid::parse(Field::EncryptionKeySid, CR).unwrap();
        let mut first = RecordingSettingsPatch::new(FriendlyName::parse("one").unwrap());
        first.encryption_key_sid = Update::Set(cr.clone());
        first.encryption_enabled = Some(true);
        let stored = RecordingSettings::default_for(account)
            .merged(first)
            .unwrap();

        let second = RecordingSettingsPatch::new(FriendlyName::parse("two").unwrap());
        let kept = stored.merged(second).unwrap();
        assert_eq!(kept.encryption_key_sid, Some(cr));
        assert!(kept.encryption_enabled);

        let mut clear = RecordingSettingsPatch::new(FriendlyName::parse("three").unwrap());
        clear.encryption_key_sid = Update::Clear;
        let err = kept.merged(clear).unwrap_err();
        assert_eq!(err.field, Field::EncryptionEnabled);
        assert_eq!(err.violation, Violation::Requires(Field::EncryptionKeySid));
    }
}
