import unittest

from sfn_wasm_guest import Context, TaskFailure

from handler import greet


class Greet(unittest.TestCase):
    def test_greets_by_name(self):
        ctx = Context.for_tests({"hello": "World"})
        self.assertEqual(greet({"hello": "World"}, ctx), {"greeting": "Hello, World"})
        self.assertEqual(ctx.heartbeats, 1)

    def test_an_empty_name_fails_the_task(self):
        with self.assertRaises(TaskFailure) as failed:
            greet({"hello": ""}, Context.for_tests())
        self.assertEqual(failed.exception.error, "InvalidName")


if __name__ == "__main__":
    unittest.main()
