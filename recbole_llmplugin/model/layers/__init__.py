"""Building blocks of the LLM recommenders: LLM loading, the text encoder, the CF backbone adapter and candidate
scoring."""
