"""The stage contract, decisions and their categories, the stage registry, the one function that
applies verdicts, and the builder that turns a config into the steps a runner executes."""
