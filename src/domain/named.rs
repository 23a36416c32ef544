//! An enum whose variants each have one name — in the API, the configuration and storage —
//! declared from one table, so the name is written once: the enum, `ALL` (every variant, in
//! the table's order), `as_str` and `parse` cannot disagree or miss a variant.

/// Declare a named enum: its attributes, then `Variant = "name"` per variant (each with its
/// own attributes, such as a doc comment).
///
/// ```ignore
/// named_enum! {
///     /// Hours or days.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum Granularity {
///         Hour = "hour",
///         Day = "day",
///     }
/// }
/// ```
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in the order declared.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// Its name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant of that name, if any.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

pub(crate) use named_enum;

#[cfg(test)]
mod tests {
    named_enum! {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Pair {
            /// The first.
            First = "first",
            Second = "second",
        }
    }

    #[test]
    fn each_name_parses_to_its_variant_and_no_other_name_parses() {
        assert_eq!(Pair::ALL, [Pair::First, Pair::Second]);
        for p in Pair::ALL {
            assert_eq!(Pair::parse(p.as_str()), Some(p));
        }
        assert_eq!(Pair::First.as_str(), "first");
        assert_eq!(Pair::parse("First"), None);
        assert_eq!(Pair::parse(""), None);
    }
}
