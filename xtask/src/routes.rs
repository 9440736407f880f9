//! The route table (`shared::http::routes`) is the one list of routes: the
//! `cargo lambda watch` router in `Cargo.toml` is generated from it
//! (`cargo xtask routes` prints the section), and tests hold `Cargo.toml` and
//! `openapi.yaml` to it (`policy` does the same for the template's events).

use shared::http::routes;

/// The `[workspace.metadata.lambda.watch.router]` section for the table.
pub fn watch_router_section() -> String {
    let mut text = String::from(
        "# `cargo lambda watch` routes API paths to functions (local development only).\n\
         # Generated from the route table (shared/src/http/routes.rs): `cargo xtask routes`.\n\
         [workspace.metadata.lambda.watch.router]\n",
    );
    // One line per path, listing every method served there (a TOML key once).
    let mut paths: Vec<(String, Vec<String>)> = Vec::new();
    for (_, route) in routes::all() {
        for path in route.paths() {
            let target = format!(
                "{{ method = \"{}\", function = \"{}\" }}",
                route.method,
                route.function.binary()
            );
            match paths.iter_mut().find(|(p, _)| *p == path) {
                Some((_, targets)) => targets.push(target),
                None => paths.push((path, vec![target])),
            }
        }
    }
    for (path, targets) in paths {
        text += &format!("\"{path}\" = [{}]\n", targets.join(", "));
    }
    text
}

/// `cargo xtask routes`: prints the generated section.
pub fn command() -> anyhow::Result<()> {
    print!("{}", watch_router_section());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    fn read(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn the_watch_router_is_the_route_table() {
        let manifest = read("Cargo.toml");
        let section = watch_router_section();
        assert!(
            manifest.contains(&section),
            "Cargo.toml's watch router differs from the route table; replace it with \
             the output of `cargo xtask routes`:\n{section}"
        );
        assert_eq!(
            manifest
                .matches("[workspace.metadata.lambda.watch.router]")
                .count(),
            1
        );
    }

    #[test]
    fn openapi_documents_exactly_the_route_table() {
        let doc: serde_norway::Value =
            serde_norway::from_str(&read("openapi.yaml")).expect("openapi.yaml is YAML");
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_mapping()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                let path = path.as_str().expect("path").to_owned();
                item.as_mapping()
                    .into_iter()
                    .flatten()
                    .filter_map(|(method, _)| method.as_str())
                    .filter(|m| ["get", "post", "put", "delete", "patch"].contains(m))
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let table: BTreeSet<(String, String)> = routes::all()
            .map(|(_, r)| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(documented, table);
    }
}
