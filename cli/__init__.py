"""The `deltarubric` command line: the entry layer over rm/, eval/, app/, train/ and pairdata/.

Nothing below it imports it. Each command checks its flags, calls one library function and prints the result.
"""
