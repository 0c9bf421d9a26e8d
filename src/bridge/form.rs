//! Twilio's POST body: `application/x-www-form-urlencoded` with PascalCase
//! parameters, decoded into the contract's Set request.

use std::{fmt, str::FromStr};

use super::error::ApiError;
use crate::contract::SetSettingsMessage;

/// Decodes `application/x-www-form-urlencoded` into a Set request: `+` and
/// `%20` are both spaces, booleans are `true`/`false` in any case, an empty
/// string clears an optional field, unknown parameters are ignored (as
/// Twilio does).
///
/// # Errors
/// A 400/20001 naming the parameter for invalid UTF-8, a repeated
/// parameter, or a boolean that is neither `true` nor `false`.
pub fn parse_form(body: &[u8]) -> Result<SetSettingsMessage, ApiError> {
    let mut request = SetSettingsMessage::default();
    let mut seen = Vec::new();
    for (raw_key, raw_value) in pairs(body) {
        let key = form_decode(raw_key).map_err(|()| {
            ApiError::bad_request("Invalid parameter name: not valid UTF-8".to_owned())
        })?;
        let Some(param) = Param::from_str(&key).ok() else {
            continue;
        };
        if seen.contains(&param) {
            return Err(ApiError::invalid_parameter(param, "given more than once"));
        }
        seen.push(param);
        let value = form_decode(raw_value)
            .map_err(|()| ApiError::invalid_parameter(param, "not valid UTF-8"))?;
        match param {
            Param::FriendlyName => request.friendly_name = value,
            Param::AwsCredentialsSid => request.aws_credentials_sid = Some(value),
            Param::AwsS3Url => request.aws_s3_url = Some(value),
            Param::EncryptionKeySid => request.encryption_key_sid = Some(value),
            Param::AwsStorageEnabled => {
                request.aws_storage_enabled = Some(parse_bool(param, &value)?)
            }
            Param::EncryptionEnabled => {
                request.encryption_enabled = Some(parse_bool(param, &value)?)
            }
        }
    }
    Ok(request)
}

/// A form body's parameters as the request log keeps them, in order: the
/// value only for the parameters the bridge knows, and even then without a
/// URL's user information; the name of an unknown parameter only if it
/// looks like one of Twilio's (PascalCase letters, as a misspelt parameter
/// would). Anything else could be a secret a client sent by mistake (a raw
/// token or a JSON body has no `=`, and would be all "name").
pub fn recorded_parameters(body: &[u8]) -> Vec<(String, String)> {
    const NOT_KEPT: &str = "(not recorded)";
    let plausible_name = |name: &str| {
        (2..=40).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && name.chars().all(|c| c.is_ascii_alphabetic())
    };
    let lossy = |raw: &[u8]| {
        percent_encoding::percent_decode(&plus_as_space(raw))
            .decode_utf8_lossy()
            .into_owned()
    };
    pairs(body)
        .map(|(raw_key, raw_value)| {
            let name = lossy(raw_key);
            match Param::from_str(&name) {
                Ok(Param::AwsS3Url) => (name, without_user_info(&lossy(raw_value))),
                Ok(_) => (name, lossy(raw_value)),
                Err(()) if plausible_name(&name) => (name, NOT_KEPT.to_owned()),
                Err(()) => (NOT_KEPT.to_owned(), NOT_KEPT.to_owned()),
            }
        })
        .collect()
}

/// `value` with any `user:password@` of a URL in it blanked out.
fn without_user_info(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            format!("{url} (user information removed)")
        }
        Ok(_) => value.to_owned(),
        // Not a URL the parser accepts: it could still hold user
        // information, so keep it only if it has no '@' at all.
        Err(_) if value.contains('@') => "(not recorded: malformed URL)".to_owned(),
        Err(_) => value.to_owned(),
    }
}

/// A form body's raw `name=value` pairs, in order (a pair without `=` has
/// an empty value).
fn pairs(body: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        })
}

fn plus_as_space(raw: &[u8]) -> Vec<u8> {
    raw.iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect()
}

/// `+` to space, then percent-decoding, then strict UTF-8.
fn form_decode(raw: &[u8]) -> Result<String, ()> {
    percent_encoding::percent_decode(&plus_as_space(raw))
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| ())
}

fn parse_bool(param: Param, value: &str) -> Result<bool, ApiError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ApiError::invalid_parameter(
            param,
            &format!("must be true or false, not {value:?}"),
        ))
    }
}

/// Twilio's PascalCase parameters of a settings resource's POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    FriendlyName,
    AwsCredentialsSid,
    AwsS3Url,
    AwsStorageEnabled,
    EncryptionKeySid,
    EncryptionEnabled,
}

impl Param {
    pub const ALL: [Param; 6] = [
        Param::FriendlyName,
        Param::AwsCredentialsSid,
        Param::AwsS3Url,
        Param::AwsStorageEnabled,
        Param::EncryptionKeySid,
        Param::EncryptionEnabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Param::FriendlyName => "FriendlyName",
            Param::AwsCredentialsSid => "AwsCredentialsSid",
            Param::AwsS3Url => "AwsS3Url",
            Param::AwsStorageEnabled => "AwsStorageEnabled",
            Param::EncryptionKeySid => "EncryptionKeySid",
            Param::EncryptionEnabled => "EncryptionEnabled",
        }
    }

    /// The contract's (proto) name of the field this parameter carries.
    pub fn proto_field(self) -> &'static str {
        match self {
            Param::FriendlyName => "friendly_name",
            Param::AwsCredentialsSid => "aws_credentials_sid",
            Param::AwsS3Url => "aws_s3_url",
            Param::AwsStorageEnabled => "aws_storage_enabled",
            Param::EncryptionKeySid => "encryption_key_sid",
            Param::EncryptionEnabled => "encryption_enabled",
        }
    }

    /// The parameter that carries the proto field `name`, if any
    /// (`account_sid` comes from the credentials, not the form).
    pub fn for_proto_field(name: &str) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.proto_field() == name)
    }
}

impl FromStr for Param {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Param::ALL.into_iter().find(|p| p.as_str() == s).ok_or(())
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::recorded_parameters;

    #[test]
    fn the_request_log_keeps_known_values_but_no_unknown_value_or_url_credentials() {
        let body = b"FriendlyName=a+b%21&AwsS3Url=https%3A%2F%2Fkey%3Asecret%40bucket.s3.amazonaws.com%2Fx\
&AuthToken=hunter2&Flag&AwsS3Url=not%20a%20url%40host&{\"token\":\"s3cret\"}&tok3nSecret";
        let recorded = recorded_parameters(body);
        let text = format!("{recorded:?}");

        assert_eq!(recorded[0], ("FriendlyName".into(), "a b!".into()));
        assert_eq!(
            recorded[1],
            (
                "AwsS3Url".into(),
                "https://bucket.s3.amazonaws.com/x (user information removed)".into()
            )
        );
        assert_eq!(recorded[2], ("AuthToken".into(), "(not recorded)".into()));
        assert_eq!(recorded[3], ("Flag".into(), "(not recorded)".into()));
        assert_eq!(
            recorded[4],
            ("AwsS3Url".into(), "(not recorded: malformed URL)".into())
        );
        assert_eq!(
            recorded[5],
            ("(not recorded)".into(), "(not recorded)".into())
        );
        assert_eq!(
            recorded[6],
            ("(not recorded)".into(), "(not recorded)".into())
        );
        for secret in ["secret", "hunter2", "s3cret", "tok3n"] {
            assert!(!text.contains(secret), "{secret} kept: {text}");
        }
    }
}
