from supamove.cli import main

main()
