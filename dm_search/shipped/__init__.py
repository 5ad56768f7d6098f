"""The study specs and trial configs that ship with dm-search, so that an installed package
has them too: ``dm-search submit quickstart`` runs ``search_spaces/quickstart.yaml`` by name,
and ``dm-search init`` starts from them. Data only: nothing here is imported."""
