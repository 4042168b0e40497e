//! An error's chain of causes, walked in one place: to classify a status by what caused it
//! (a transport failure, a refused connection), and to name every cause in a message.

use std::error::Error;

/// `error`'s sources, nearest first (not `error` itself).
pub(crate) fn causes<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(error.source(), |&cause| cause.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_walked_nearest_first() {
        let error = Outer(std::io::Error::other("inner"));
        let found: Vec<String> = causes(&error).map(|c| c.to_string()).collect();
        assert_eq!(found, ["inner"]);
    }
}
