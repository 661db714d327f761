"""A project grader, registered for the example suite next to this file."""

import evalgate


@evalgate.grader("one-line", params={"max_words": int})
def one_line(output: str, case, max_words: int = 12) -> evalgate.Grade:
    words = len(output.split())
    ok = "\n" not in output.strip() and words <= max_words
    return evalgate.Grade(float(ok), ok, f"{words} words, {output.count(chr(10))} line breaks")
