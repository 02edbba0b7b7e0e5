import unittest

from sizes import describe


class DescribeTest(unittest.TestCase):
    def test_groups_the_thousands(self):
        self.assertEqual(describe("kiln.tar", 1234567), "kiln.tar: 1,234,567 bytes")

    def test_leaves_small_sizes_alone(self):
        self.assertEqual(describe("empty", 0), "empty: 0 bytes")


if __name__ == "__main__":
    unittest.main()
