//! A valid component that does not implement `sfn:activity/handler`.

wit_bindgen::generate!({ path: "wit", world: "other" });

struct Other;

impl Guest for Other {
    fn handle(input: String) -> String {
        input
    }
}

export!(Other);
