//! Fault injection for test suites (`AdminService/InjectFault`): rules that
//! make matching Gets and Sets fail with a chosen status or wait first, so
//! a client's retry paths can be tested against the real thing. In memory
//! only; a restart clears them.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use super::convert::{optional_account, optional_resource};
use crate::{
    contract::pb,
    domain::{AccountSid, Field, ValidationError, Violation},
    resource::Resource,
};

/// Which RPC of a resource a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Set,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Set => "set",
        }
    }
}

/// The longest delay a rule may ask for.
const MAX_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Rule {
    id: u64,
    resource: Option<Resource>,
    method: Option<Method>,
    account: Option<AccountSid>,
    /// Matching requests still to affect; `None`: no count limit.
    remaining: Option<u32>,
    /// The share of matching requests affected; 0 means all.
    fraction: f64,
    /// The gRPC code to fail with; 0: delay only.
    code: i32,
    delay: Duration,
    applied: u64,
}

/// What a rule does to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Action {
    pub delay: Duration,
    /// The gRPC code to fail with, if any.
    pub code: Option<i32>,
}

/// The rules in force. Shared by every service of a server.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    next_id: std::sync::atomic::AtomicU64,
}

fn invalid(field: Field, why: &str) -> ValidationError {
    ValidationError {
        field,
        violation: Violation::Malformed(why.to_owned()),
    }
}

impl Faults {
    /// Validates and adds a rule; returns it as the contract shows it.
    ///
    /// # Errors
    /// The first malformed field.
    pub fn add(
        &self,
        request: &pb::InjectFaultRequest,
        served: &[Resource],
    ) -> Result<pb::Fault, ValidationError> {
        let resource = optional_resource(&request.resource, served)?;
        let method = match request.method.as_str() {
            "" => None,
            "get" => Some(Method::Get),
            "set" => Some(Method::Set),
            _ => return Err(invalid(Field::Method, "must be get, set or empty")),
        };
        let account = optional_account(&request.account_sid)?;
        if !(0.0..=1.0).contains(&request.fraction) || request.fraction.is_nan() {
            return Err(invalid(Field::Fraction, "must be between 0 and 1"));
        }
        if request.count == 0 && request.fraction == 0.0 {
            return Err(invalid(
                Field::Count,
                "set count, fraction or both: a rule must say how many requests it affects",
            ));
        }
        if !(0..=16).contains(&request.grpc_code) {
            return Err(invalid(
                Field::GrpcCode,
                "must be a gRPC status code, 1 to 16, or 0",
            ));
        }
        let delay = Duration::from_millis(u64::from(request.delay_ms));
        if delay > MAX_DELAY {
            return Err(invalid(Field::DelayMs, "must be at most 60000"));
        }
        if request.grpc_code == 0 && delay.is_zero() {
            return Err(invalid(
                Field::GrpcCode,
                "set grpc_code, delay_ms or both: the rule would do nothing",
            ));
        }
        let rule = Rule {
            id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1,
            resource,
            method,
            account,
            remaining: (request.count > 0).then_some(request.count),
            fraction: request.fraction,
            code: request.grpc_code,
            delay,
            applied: 0,
        };
        let shown = message(&rule);
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(rule);
        Ok(shown)
    }

    pub fn list(&self) -> Vec<pb::Fault> {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(message)
            .collect()
    }

    /// Removes every rule; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let n = rules.len();
        rules.clear();
        n
    }

    /// What the first matching rule that fires does to this request, if
    /// one does. A rule whose count runs out is removed.
    pub fn check(
        &self,
        resource: Resource,
        method: Method,
        account: &AccountSid,
    ) -> Option<Action> {
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        if rules.is_empty() {
            return None;
        }
        let index = rules.iter().position(|r| {
            r.resource.is_none_or(|x| x == resource)
                && r.method.is_none_or(|x| x == method)
                && r.account.as_ref().is_none_or(|x| x == account)
                && (r.fraction == 0.0 || fastrand::f64() < r.fraction)
        })?;
        let rule = &mut rules[index];
        rule.applied += 1;
        let action = Action {
            delay: rule.delay,
            code: (rule.code != 0).then_some(rule.code),
        };
        if let Some(remaining) = &mut rule.remaining {
            *remaining -= 1;
            if *remaining == 0 {
                rules.remove(index);
            }
        }
        Some(action)
    }
}

fn message(rule: &Rule) -> pb::Fault {
    pb::Fault {
        id: rule.id.to_string(),
        resource: rule.resource.map_or(String::new(), |r| r.name().to_owned()),
        method: rule.method.map_or(String::new(), |m| m.name().to_owned()),
        account_sid: rule
            .account
            .as_ref()
            .map_or(String::new(), |a| a.as_str().to_owned()),
        remaining: rule.remaining.unwrap_or(0),
        fraction: rule.fraction,
        grpc_code: rule.code,
        delay_ms: u32::try_from(rule.delay.as_millis()).unwrap_or(u32::MAX),
        applied: rule.applied,
    }
}
