from pqtradeoff.cli import main

main()
