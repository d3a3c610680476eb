//! Enums chosen by name on the command line and in the wasm API.

/// `name()`, `Display` and `FromStr` for an enum of unit variants, from one list of names, so a
/// name is written once and the error for an unknown one lists every name there is.
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = crate::error::Error;
            fn from_str(s: &str) -> crate::error::Result<$ty> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(crate::error::Error::Input(format!(
                        "unknown {} {other:?}: use {}",
                        $what,
                        [$($name),+].join(", ")
                    ))),
                }
            }
        }
    };
}
pub(crate) use named_enum;
