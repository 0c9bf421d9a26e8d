//! Validated values: every Twilio SID and string the settings hold, parsed
//! once at an edge into a type that cannot hold an invalid value.

use std::fmt;

use super::{Field, ValidationError, Violation};

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

/// An entity tag (RFC 7232, AIP-154): a resource state's revision, quoted.
/// A conditional write names the state it expects by its etag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Etag(u64);

impl Etag {
    pub fn of_revision(revision: u64) -> Self {
        Etag(revision)
    }

    /// The revision this etag names.
    pub fn revision(self) -> u64 {
        self.0
    }

    /// Parses `"5"` (or the weak form `W/"5"`, which names the same state).
    ///
    /// # Errors
    /// A [`ValidationError`] on `etag` for anything else.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let strong = value.strip_prefix("W/").unwrap_or(value);
        strong
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| v.parse().ok())
            .map(Etag)
            .ok_or_else(|| {
                ValidationError::malformed(
                    Field::Etag,
                    "must be an etag as a resource carries it, such as \"42\" (quotes included)",
                )
            })
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_etag_is_the_quoted_revision_and_parses_back() {
        assert_eq!(Etag::of_revision(42).to_string(), "\"42\"");
        assert_eq!(Etag::parse("\"42\"").unwrap().revision(), 42);
        assert_eq!(Etag::parse("W/\"42\"").unwrap().revision(), 42);
        for bad in ["42", "\"x\"", "", "\"42", "*"] {
            assert_eq!(Etag::parse(bad).unwrap_err().field, Field::Etag, "{bad:?}");
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
}
