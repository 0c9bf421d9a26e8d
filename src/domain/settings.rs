//! The settings record every resource kind shares, the patch a Set applies
//! to it, and the merge with its cross-field rules.

use std::time::SystemTime;

use super::{AccountSid, CredentialSid, Field, FriendlyName, S3Url, ValidationError, Violation};

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
pub struct SettingsPatch {
    pub friendly_name: FriendlyName,
    pub aws_credentials_sid: Update<CredentialSid>,
    pub aws_s3_url: Update<S3Url>,
    pub aws_storage_enabled: Option<bool>,
    pub encryption_key_sid: Update<CredentialSid>,
    pub encryption_enabled: Option<bool>,
}

impl SettingsPatch {
    /// A patch that only sets the (required) friendly name.
    pub fn new(friendly_name: FriendlyName) -> Self {
        SettingsPatch {
            friendly_name,
            aws_credentials_sid: Update::Keep,
            aws_s3_url: Update::Keep,
            aws_storage_enabled: None,
            encryption_key_sid: Update::Keep,
            encryption_enabled: None,
        }
    }

    /// The patch that makes a resource hold exactly `state`'s fields (a
    /// rollback to it).
    ///
    /// # Errors
    /// `friendly_name` missing: `state` is a default resource, which no
    /// write ever produced.
    pub fn replacing(state: &Settings) -> Result<Self, ValidationError> {
        fn exact<T: Clone>(v: &Option<T>) -> Update<T> {
            v.clone().map_or(Update::Clear, Update::Set)
        }
        Ok(SettingsPatch {
            friendly_name: state.friendly_name.clone().ok_or(ValidationError {
                field: Field::FriendlyName,
                violation: Violation::Missing,
            })?,
            aws_credentials_sid: exact(&state.aws_credentials_sid),
            aws_s3_url: exact(&state.aws_s3_url),
            aws_storage_enabled: Some(state.aws_storage_enabled),
            encryption_key_sid: exact(&state.encryption_key_sid),
            encryption_enabled: Some(state.encryption_enabled),
        })
    }
}

/// A resource's fields as text, as a stored record or an export line holds
/// them: what [`Settings::parse`] validates into a record.
#[derive(Debug, Clone, Copy, Default)]
pub struct SettingsText<'a> {
    pub friendly_name: Option<&'a str>,
    pub aws_credentials_sid: Option<&'a str>,
    pub aws_s3_url: Option<&'a str>,
    pub aws_storage_enabled: bool,
    pub encryption_key_sid: Option<&'a str>,
    pub encryption_enabled: bool,
}

/// One account's settings resource as stored (Recording and Composition
/// Settings share this shape; the store keys it by resource and account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
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

impl Settings {
    /// The resource of an account that never set anything. Twilio's resource
    /// always exists, so reads of such an account answer this, not "not found".
    pub fn default_for(account_sid: AccountSid) -> Self {
        Settings {
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

    /// Validates `text` into the record of `account` (revision 0, no update
    /// time: the caller knows those), every field and the cross-field rules,
    /// so a record the API could never have written is refused.
    ///
    /// # Errors
    /// The first invalid field.
    pub fn parse(account: AccountSid, text: SettingsText<'_>) -> Result<Self, ValidationError> {
        let credential =
            |field, v: Option<&str>| v.map(|v| CredentialSid::parse(field, v)).transpose();
        let settings = Settings {
            friendly_name: text.friendly_name.map(FriendlyName::parse).transpose()?,
            aws_credentials_sid: credential(Field::AwsCredentialsSid, text.aws_credentials_sid)?,
            aws_s3_url: text.aws_s3_url.map(S3Url::parse).transpose()?,
            aws_storage_enabled: text.aws_storage_enabled,
            encryption_key_sid: credential(Field::EncryptionKeySid, text.encryption_key_sid)?,
            encryption_enabled: text.encryption_enabled,
            ..Settings::default_for(account)
        };
        settings.check_dependencies()?;
        Ok(settings)
    }

    /// Merges `patch` into these settings and checks the rules that span
    /// fields. The result keeps this record's revision and time: the store
    /// stamps them when it writes.
    ///
    /// # Errors
    /// A [`ValidationError`] if a flag is enabled without what it needs.
    pub fn merged(&self, patch: SettingsPatch) -> Result<Self, ValidationError> {
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
    fn merge_keeps_unsent_fields_and_clears_empty_ones() {
        let account = AccountSid::parse("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        let cr = CredentialSid::parse(Field::EncryptionKeySid, CR).unwrap();
        let mut first = SettingsPatch::new(FriendlyName::parse("one").unwrap());
        first.encryption_key_sid = Update::Set(cr.clone());
        first.encryption_enabled = Some(true);
        let stored = Settings::default_for(account).merged(first).unwrap();

        let second = SettingsPatch::new(FriendlyName::parse("two").unwrap());
        let kept = stored.merged(second).unwrap();
        assert_eq!(kept.encryption_key_sid, Some(cr));
        assert!(kept.encryption_enabled);

        let mut clear = SettingsPatch::new(FriendlyName::parse("three").unwrap());
        clear.encryption_key_sid = Update::Clear;
        let err = kept.merged(clear).unwrap_err();
        assert_eq!(err.field, Field::EncryptionEnabled);
        assert_eq!(err.violation, Violation::Requires(Field::EncryptionKeySid));
    }
}
