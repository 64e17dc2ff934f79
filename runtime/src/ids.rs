//! Newtype ids. Each prints with a short prefix (`n-` node, `j-` job, `a-`
//! actor, `t-` task, `o-` object, `pg-` placement group) so a log line says
//! what kind of thing it names. `Display` gives the full id, which `FromStr`
//! parses back; [`NodeId::short`] (and its siblings) give the first 8 hex
//! digits for humans.

use rkyv::{Archive, Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An id string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {text:?}: expected {prefix}-<32 hex digits>")]
pub struct IdParseError {
    kind: &'static str,
    prefix: &'static str,
    text: String,
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[rkyv(derive(Debug, PartialEq, Eq, Hash))]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// The id's prefix, without the dash.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn random() -> Self {
                $name(rand::random())
            }

            /// The prefix and the first 8 hex digits, for tables and logs.
            pub fn short(&self) -> String {
                let full = self.to_string();
                full[..$prefix.len() + 1 + 8].to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}-", $prefix)?;
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, IdParseError> {
                let err = || IdParseError { kind: $kind, prefix: $prefix, text: s.to_string() };
                let hex = s.strip_prefix(concat!($prefix, "-")).unwrap_or(s);
                if hex.len() != 32 || !hex.is_ascii() {
                    return Err(err());
                }
                let mut out = [0u8; 16];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
                }
                Ok($name(out))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// A node (one raylet incarnation). A restarted raylet gets a new id.
    NodeId, "n", "node"
);
define_id!(
    /// A job (one driver program run).
    JobId, "j", "job"
);
define_id!(
    /// An actor (stable across its restarts).
    ActorId, "a", "actor"
);
define_id!(
    /// A placement group (a gang reservation of resource bundles).
    PlacementGroupId, "pg", "placement group"
);
define_id!(
    /// A cluster (one head's lifetime of tables).
    ClusterId, "c", "cluster"
);
define_id!(
    /// An actor handle (calls through one handle keep their order).
    HandleId, "h", "actor handle"
);
define_id!(
    /// A task (an actor call and an actor's creation are tasks too). Its
    /// result object has the same 16 bytes: [`TaskId::result`].
    TaskId, "t", "task"
);

impl TaskId {
    /// The object that holds this task's result.
    pub fn result(self) -> prism_objectstore::ObjectId {
        prism_objectstore::ObjectId(self.0)
    }

    /// The task whose result is `object`.
    pub fn of_result(object: prism_objectstore::ObjectId) -> TaskId {
        TaskId(object.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_with_prefix_and_parse_back() {
        let id = NodeId::random();
        let s = id.to_string();
        assert!(s.starts_with("n-") && s.len() == 34);
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        assert_eq!(id.short().len(), 10);
        assert_eq!(format!("{id:?}"), id.short());
        assert!("n-zz".parse::<NodeId>().is_err());
        assert!("n-é0000000000000000000000000000000"
            .parse::<NodeId>()
            .is_err());
        let j = JobId([0xab; 16]);
        assert_eq!(j.short(), "j-abababab");
    }
}
