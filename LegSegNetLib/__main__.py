from LegSegNetLib.cli import command

command()
