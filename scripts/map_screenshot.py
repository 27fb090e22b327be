"""docs/map.png: the map view on a synthetic 1,400-track library (14 folders of clustered
vibe vectors, benchmarks/map_speed.py's generator), a pad as the query with its 10
nearest neighbours ringed and a rectangle selection; offscreen.

    python scripts/map_screenshot.py
"""
import os
import sys
os.environ["QT_QPA_PLATFORM"]="offscreen"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np
from PySide6.QtWidgets import QApplication
from benchmarks.map_speed import synthetic
from engine.library.layout import layout
from app.mapview import MapView
app=QApplication([])
names=["Kicks","Snares","Hats","Claps","Toms","Percussion","Bass","Keys","Pads","Leads","Vocals","FX","Drum loops","Music loops"]
x,lab=synthetic(1400,len(names),seed=3)
y=layout(x)
paths=[f"/home/me/Samples/{names[l]}/{names[l].lower().rstrip('s')} {i:03d}.wav" for i,l in enumerate(lab)]
v=MapView(); v.resize(900,620); v.show()
v.set_points(paths,y)
q=int(np.flatnonzero(lab==8)[0]); sims=x@x[q]; nn=[int(i) for i in np.argsort(-sims)[1:11]]
v.highlight_paths(paths[q],[paths[i] for i in nn])
from PySide6.QtCore import QRectF
c=y[lab==2].mean(0); v.select_rect(QRectF(c[0]-4,c[1]-4,8,8))
v.hover_label.setText(os.path.basename(paths[q]))
app.processEvents()
v.grab().save("docs/map.png"); print("ok")
