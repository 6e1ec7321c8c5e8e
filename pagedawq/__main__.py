from pagedawq.entrypoints.cli import main

main()
