//! `learn_ids`: the new ID at a pointer in each side's answer to one create
//! is learned as a pair.
//!
//! Must never: learn a pair from anything but both answers to one create.

use serde_json::Value;

use crate::compare::pointer::{for_each_match, Pattern, PatternSet};

use super::{IdPair, Side};

/// `learn_ids`: the new ID at a pointer in each side's answer to one create.
#[derive(Debug, Clone)]
pub struct LearnRule {
    pub kind: String,
    pub primary: PatternSet<()>,
    pub shadow: PatternSet<()>,
    /// The pointers as configured, for messages.
    pub primary_text: String,
    pub shadow_text: String,
}

impl LearnRule {
    pub fn new(kind: &str, primary: &str, shadow: &str) -> Result<LearnRule, crate::compare::pointer::PointerError> {
        let set = |text: &str| -> Result<PatternSet<()>, _> {
            let mut set = PatternSet::default();
            set.push(Pattern::parse(text)?, ());
            Ok(set)
        };
        Ok(LearnRule {
            kind: kind.to_string(),
            primary: set(primary)?,
            shadow: set(shadow)?,
            primary_text: primary.to_string(),
            shadow_text: shadow.to_string(),
        })
    }

    /// The IDs at this rule's primary pointer, in document order.
    pub fn primary_ids(&self, document: &Value) -> Vec<String> {
        ids_at(&self.primary, document)
    }

    /// The IDs at this rule's pointer for `side`, in document order.
    pub fn ids_of(&self, side: Side, document: &Value) -> Vec<String> {
        match side {
            Side::Primary => ids_at(&self.primary, document),
            Side::Shadow => ids_at(&self.shadow, document),
        }
    }

    /// Pairs the IDs of both answers by position (one each for a single
    /// create, one per item for a batch). Different counts pair nothing:
    /// pairing by position would then be a guess.
    pub fn pair(&self, primary_ids: &[String], shadow: &Value) -> Result<Vec<IdPair>, String> {
        self.pair_ids(primary_ids, ids_at(&self.shadow, shadow))
    }

    /// Pairs two lists of IDs by position.
    pub fn pair_ids(&self, primary_ids: &[String], shadow_ids: Vec<String>) -> Result<Vec<IdPair>, String> {
        if primary_ids.len() != shadow_ids.len() {
            return Err(format!(
                "learn_ids {}: the primary answered {} ID(s) at {}, the shadow {} at {}; nothing paired",
                self.kind,
                primary_ids.len(),
                self.primary_text,
                shadow_ids.len(),
                self.shadow_text
            ));
        }
        Ok(primary_ids
            .iter()
            .zip(shadow_ids)
            .map(|(primary_id, shadow_id)| IdPair {
                kind: self.kind.clone(),
                primary_id: primary_id.clone(),
                shadow_id,
            })
            .collect())
    }
}

pub(super) fn ids_at(set: &PatternSet<()>, document: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for_each_match(set, document, &mut |(), value| {
        if let Some(id) = id_text(value) {
            ids.push(id);
        }
    });
    ids
}

/// An ID's text: strings as they are, integers in decimal.
pub(super) fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) if number.is_i64() || number.is_u64() => Some(number.to_string()),
        _ => None,
    }
}
