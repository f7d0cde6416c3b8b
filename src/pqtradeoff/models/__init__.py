"""Model implementations behind one interface (`base.LanguageModel`): Hugging Face (`hf`) and exact automata
(`fsa`)."""
