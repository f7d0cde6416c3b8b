"""From a scored corpus to numbers and figures: IMH, statistics, alignment fidelity, advice, typed results,
plots, the report. numpy / scipy / pandas only: no torch, nothing of the model side but the corpus
contract."""
